"""The Jaeger v2 config: OTLP in, in-memory storage, query API (``/api/v3``) out.

Every listener is bound to loopback on a port of the stack, so two stacks coexist
(Jaeger's defaults, 4318/16686/13133/8888, would collide).
"""

from __future__ import annotations

from typing import Any

from system.runtime.topology import Topology

MAX_TRACES = 50_000
"""Bounds the in-memory store; a load test's traces beyond it evict the oldest."""


def jaeger_config(topology: Topology) -> dict[str, Any]:
    ports = topology.ports

    def at(port: int) -> str:
        return f"127.0.0.1:{port}"

    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query", "healthcheckv2"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": ["jaeger_storage_exporter"],
                }
            },
            "telemetry": {
                "resource": {"service.name": "jaeger"},
                "metrics": {
                    "level": "basic",
                    "readers": [
                        {
                            "pull": {
                                "exporter": {
                                    "prometheus": {
                                        "host": "127.0.0.1",
                                        "port": ports.jaeger_metrics,
                                    }
                                }
                            }
                        }
                    ],
                },
                "logs": {"level": "info", "encoding": "json"},
            },
        },
        "extensions": {
            "healthcheckv2": {"use_v2": True, "http": {"endpoint": at(ports.jaeger_health)}},
            "jaeger_query": {
                "storage": {"traces": "memstore"},
                "http": {"endpoint": at(ports.jaeger_query)},
                "grpc": {"endpoint": at(ports.jaeger_query_grpc)},
            },
            "jaeger_storage": {"backends": {"memstore": {"memory": {"max_traces": MAX_TRACES}}}},
        },
        "receivers": {
            "otlp": {
                "protocols": {
                    "http": {"endpoint": at(ports.jaeger_otlp_http)},
                    "grpc": {"endpoint": at(ports.jaeger_otlp_grpc)},
                }
            }
        },
        "processors": {"batch": {"timeout": "200ms"}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "memstore"}},
    }
