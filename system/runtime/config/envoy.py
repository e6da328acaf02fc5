"""The Envoy bootstrap: one gateway listener and one mesh listener per service.

* Gateway: ``/api/v1/<service>/...`` → the service's cluster (prefix rewritten to ``/``),
  per-client local rate limit (429 + ``x-ratelimit-*`` headers), request size limit,
  retries of idempotent methods, JSON access log, OpenTelemetry spans to Jaeger.
* Mesh: services call each other through ``127.0.0.1:<mesh port of the callee>``; each
  mesh listener has a fault filter driven by its own runtime keys (:func:`fault_keys`),
  changed at run time through the admin API's ``/runtime_modify``: the same semantics as
  an Istio VirtualService fault on that edge.
* Clusters: round robin over the service's replicas, active health checks, outlier
  detection (so a killed replica is ejected).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from system.runtime.topology import ServiceDef, Topology

JWT_ISSUER = "microharness-users"
JWT_AUDIENCE = "microharness"

_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}
_IDEMPOTENT = "GET|HEAD|OPTIONS|PUT|DELETE"
OTEL_CLUSTER = "jaeger_otlp"


def fault_keys(service: str) -> dict[str, str]:
    """The runtime keys of the fault filter on the mesh edge into ``service``."""
    prefix = f"mesh.{service}"
    return {
        "delay_percent": f"{prefix}.delay.percent",
        "delay_duration_ms": f"{prefix}.delay.duration_ms",
        "abort_percent": f"{prefix}.abort.percent",
        "abort_http_status": f"{prefix}.abort.http_status",
    }


def _address(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def _access_log(listener: str) -> list[dict[str, Any]]:
    return [
        {
            "name": "envoy.access_loggers.stdout",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                "log_format": {
                    "json_format": {
                        "ts": "%START_TIME%",
                        "listener": listener,
                        "method": "%REQ(:METHOD)%",
                        "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
                        "status": "%RESPONSE_CODE%",
                        "flags": "%RESPONSE_FLAGS%",
                        "duration_ms": "%DURATION%",
                        "upstream": "%UPSTREAM_HOST%",
                        "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
                        "client_id": "%REQ(X-CLIENT-ID)%",
                        "request_id": "%REQ(X-REQUEST-ID)%",
                        "traceparent": "%REQ(TRACEPARENT)%",
                    }
                },
            },
        }
    ]


_SAMPLERS = "type.googleapis.com/envoy.extensions.tracers.opentelemetry.samplers.v3"


def _sampler(percent: float) -> dict[str, Any]:
    """OpenTelemetry's parent-based sampling: a request with a ``traceparent`` keeps its
    sampled flag; one without is sampled for ``percent`` of trace ids."""
    return {
        "name": "envoy.tracers.opentelemetry.samplers.parent_based",
        "typed_config": {
            "@type": f"{_SAMPLERS}.ParentBasedSamplerConfig",
            "wrapped_sampler": {
                "name": "envoy.tracers.opentelemetry.samplers.trace_id_ratio_based",
                "typed_config": {
                    "@type": f"{_SAMPLERS}.TraceIdRatioBasedSamplerConfig",
                    "sampling_percentage": {
                        "numerator": round(percent * 10_000),
                        "denominator": "MILLION",
                    },
                },
            },
        },
    }


def _tracing(service_name: str, topology: Topology) -> dict[str, Any]:
    return {
        "provider": {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                "service_name": service_name,
                "sampler": _sampler(topology.gateway.trace_sampling_percent),
                "http_service": {
                    "http_uri": {
                        "uri": f"http://127.0.0.1:{topology.ports.jaeger_otlp_http}/v1/traces",
                        "cluster": OTEL_CLUSTER,
                        "timeout": "1s",
                    }
                },
            },
        },
    }


def _hcm(
    name: str,
    topology: Topology,
    routes: list[dict[str, Any]],
    filters: list[dict[str, Any]],
    tracer: str,
) -> dict[str, Any]:
    return {
        "name": name,
        "address": _address(0),  # replaced by the caller
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": _HCM,
                            "stat_prefix": name,
                            "codec_type": "AUTO",
                            # callers count as external: x-envoy-* headers are stripped, so a
                            # caller cannot switch the fault filter to other runtime keys
                            "use_remote_address": True,
                            "generate_request_id": True,
                            "preserve_external_request_id": True,
                            "always_set_request_id_in_response": True,
                            # keep a client's x-request-id byte for byte and never let it
                            # decide trace sampling: the tracer's parent-based sampler
                            # does (Envoy's own request-id sampling would override a
                            # caller's sampled traceparent, and never sample a request
                            # whose x-request-id is not a UUID)
                            "request_id_extension": {
                                "typed_config": {
                                    "@type": "type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig",
                                    "pack_trace_reason": False,
                                    "use_request_id_for_trace_sampling": False,
                                }
                            },
                            "tracing": _tracing(tracer, topology),
                            "local_reply_config": _problem_replies(),
                            "access_log": _access_log(name),
                            "route_config": {
                                "name": f"{name}_routes",
                                "virtual_hosts": [
                                    {"name": name, "domains": ["*"], "routes": routes}
                                ],
                            },
                            "http_filters": [*filters, _ROUTER],
                        },
                    }
                ]
            }
        ],
    }


def _problem_replies() -> dict[str, Any]:
    """Envoy's own replies (401, 413, 429, fault aborts) as RFC 9457 problem details."""
    return {
        "body_format": {
            "json_format": {
                "type": "about:blank",
                "title": "%RESPONSE_CODE_DETAILS%",
                "status": "%RESPONSE_CODE%",
                "detail": "%LOCAL_REPLY_BODY%",
            },
            "content_type": "application/problem+json",
        }
    }


def _jwt_authn(topology: Topology, jwks_file: Path) -> dict[str, Any]:
    """Require a valid token on every route but the public ones; the token's subject
    becomes ``x-client-id``, the key of the per-client rate limit."""
    rules: list[dict[str, Any]] = [
        {"match": {"prefix": f"/api/v1/{s.name}{path}"}}
        for s in topology.services
        for path in s.public_paths
    ]
    rules.append({"match": {"prefix": "/api/v1/"}, "requires": {"provider_name": "users"}})
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {
                "users": {
                    "issuer": JWT_ISSUER,
                    "audiences": [JWT_AUDIENCE],
                    "local_jwks": {"filename": str(jwks_file)},
                    "forward": True,
                    "from_headers": [{"name": "Authorization", "value_prefix": "Bearer "}],
                    "claim_to_headers": [{"header_name": "x-client-id", "claim_name": "sub"}],
                    "jwt_cache_config": {"jwt_cache_size": 1000},
                }
            },
            "rules": rules,
        },
    }


def _gateway(topology: Topology, jwks_file: Path | None) -> dict[str, Any]:
    policy = topology.gateway
    retry = {
        "retry_on": "connect-failure,refused-stream,reset,5xx",
        "num_retries": policy.retries,
        "per_try_timeout": f"{policy.timeout_s / (policy.retries + 1):.3f}s",
        # a retry goes to another replica: without this, round robin may send every
        # attempt to the one that just died (found by the products-replica-kill scenario)
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                },
            }
        ],
        "host_selection_retry_max_attempts": 5,
        "retriable_request_headers": [
            {"name": ":method", "string_match": {"safe_regex": {"regex": _IDEMPOTENT}}}
        ],
    }
    routes = [
        {
            "match": {"prefix": f"/api/v1/{s.name}/"},
            "route": {
                "cluster": s.name,
                "prefix_rewrite": "/",
                "timeout": f"{policy.timeout_s}s",
                "retry_policy": retry,
            },
        }
        for s in topology.services
    ]

    def bucket(rps: int) -> dict[str, Any]:
        return {"max_tokens": rps, "tokens_per_fill": rps, "fill_interval": "1s"}

    filters = [
        *([_jwt_authn(topology, jwks_file)] if jwks_file and topology.token_issuer else []),
        {
            "name": "envoy.filters.http.local_ratelimit",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
                "stat_prefix": "gateway_ratelimit",
                "status": {"code": "TooManyRequests"},
                "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
                "filter_enabled": {
                    "runtime_key": "gateway.ratelimit.enabled",
                    "default_value": {"numerator": 100, "denominator": "HUNDRED"},
                },
                "filter_enforced": {
                    "runtime_key": "gateway.ratelimit.enforced",
                    "default_value": {"numerator": 100, "denominator": "HUNDRED"},
                },
                "token_bucket": bucket(policy.shared_rps),
                "always_consume_default_token_bucket": False,
                "rate_limits": [
                    {
                        "actions": [
                            {
                                "request_headers": {
                                    "header_name": "x-client-id",
                                    "descriptor_key": "client_id",
                                }
                            }
                        ]
                    }
                ],
                "descriptors": [
                    {"entries": [{"key": "client_id"}], "token_bucket": bucket(policy.client_rps)}
                ],
                "max_dynamic_descriptors": 10_000,
            },
        },
        {
            "name": "envoy.filters.http.buffer",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                "max_request_bytes": policy.max_request_bytes,
            },
        },
    ]
    listener = _hcm("gateway", topology, routes, filters, "gateway")
    listener["address"] = _address(topology.ports.gateway)
    return listener


def _mesh(topology: Topology, service: ServiceDef) -> dict[str, Any]:
    keys = fault_keys(service.name)
    fault = {
        "name": "envoy.filters.http.fault",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
            # delay and abort must be configured (at 0%) or their runtime keys are ignored
            "delay": {
                "fixed_delay": "0.001s",
                "percentage": {"numerator": 0, "denominator": "HUNDRED"},
            },
            "abort": {
                "http_status": 503,
                "percentage": {"numerator": 0, "denominator": "HUNDRED"},
            },
            "delay_percent_runtime": keys["delay_percent"],
            "delay_duration_runtime": keys["delay_duration_ms"],
            "abort_percent_runtime": keys["abort_percent"],
            "abort_http_status_runtime": keys["abort_http_status"],
            "max_active_faults": 10_000,
        },
    }
    routes = [{"match": {"prefix": "/"}, "route": {"cluster": service.name, "timeout": "30s"}}]
    listener = _hcm(f"mesh_{service.name}", topology, routes, [fault], f"mesh-{service.name}")
    listener["address"] = _address(topology.ports.mesh(service))
    return listener


def _cluster(topology: Topology, service: ServiceDef) -> dict[str, Any]:
    return {
        "name": service.name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {
            "cluster_name": service.name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": _address(topology.ports.replica(service, r))}}
                        for r in range(1, service.replicas + 1)
                    ]
                }
            ],
        },
        "health_checks": [
            {
                "timeout": "1s",
                "interval": "2s",
                "no_traffic_interval": "2s",
                "unhealthy_threshold": 2,
                "healthy_threshold": 1,
                "http_health_check": {"path": service.health_path},
            }
        ],
        "outlier_detection": {
            "consecutive_5xx": 5,
            "consecutive_gateway_failure": 3,
            "enforcing_consecutive_5xx": 100,
            "enforcing_consecutive_gateway_failure": 100,
            "interval": "5s",
            "base_ejection_time": "10s",
            "max_ejection_percent": 50,
            "successful_active_health_check_uneject_host": False,
        },
    }


def runtime_defaults(topology: Topology) -> dict[str, int]:
    """The static runtime layer: no fault anywhere, rate limit on."""
    layer = {"gateway.ratelimit.enabled": 100, "gateway.ratelimit.enforced": 100}
    for service in topology.services:
        keys = fault_keys(service.name)
        layer.update(
            {
                keys["delay_percent"]: 0,
                keys["delay_duration_ms"]: 0,
                keys["abort_percent"]: 0,
                keys["abort_http_status"]: 503,
            }
        )
    return layer


def envoy_config(topology: Topology, *, jwks_file: Path | None = None) -> dict[str, Any]:
    ports = topology.ports
    otel = {
        "name": OTEL_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": OTEL_CLUSTER,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": _address(ports.jaeger_otlp_http)}}]}
            ],
        },
    }
    return {
        "node": {"id": f"microharness-{topology.port_base}", "cluster": "microharness"},
        "admin": {"address": _address(ports.envoy_admin)},
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                        "max_active_downstream_connections": 10_000,
                    },
                }
            ]
        },
        "layered_runtime": {
            "layers": [
                {"name": "static", "static_layer": runtime_defaults(topology)},
                {"name": "admin", "admin_layer": {}},
            ]
        },
        "static_resources": {
            "listeners": [
                _gateway(topology, jwks_file),
                *(_mesh(topology, s) for s in topology.services),
            ],
            "clusters": [*(_cluster(topology, s) for s in topology.services), otel],
        },
    }
