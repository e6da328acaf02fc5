"""Topology → every component's config: ports, offsets, replicas, fault keys, topics."""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from system.runtime import kafka_admin
from system.runtime.config.envoy import envoy_config, fault_keys, runtime_defaults
from system.runtime.config.jaeger import jaeger_config
from system.runtime.config.kafka import kafka_properties, render_properties
from system.runtime.config.prometheus import prometheus_config
from system.runtime.config.toxiproxy import toxiproxy_config
from system.runtime.topology import Topology, parse_topology


@pytest.fixture
def shop() -> Topology:
    return parse_topology(
        {
            "port_base": 40000,
            "gateway": {"client_rps": 7, "max_request_bytes": 2048},
            "services": {
                "products": {"replicas": 3, "health_path": "/health/ready"},
                "orders": {"calls": ["products"]},
            },
        }
    )


def listeners(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in config["static_resources"]["listeners"]}


def clusters(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in config["static_resources"]["clusters"]}


def port_of(listener_or_endpoint: dict[str, Any]) -> int:
    port: int = listener_or_endpoint["address"]["socket_address"]["port_value"]
    return port


def hcm(listener: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return config


def test_envoy_has_a_gateway_and_one_mesh_listener_per_service(shop: Topology) -> None:
    found = listeners(envoy_config(shop))
    assert {name: port_of(item) for name, item in found.items()} == {
        "gateway": 40000,
        "mesh_products": 40100,
        "mesh_orders": 40101,
    }


def test_each_cluster_balances_over_every_replica(shop: Topology) -> None:
    products = clusters(envoy_config(shop))["products"]
    endpoints = products["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert [port_of(e["endpoint"]) for e in endpoints] == [40201, 40202, 40203]
    assert products["health_checks"][0]["http_health_check"]["path"] == "/health/ready"
    assert products["outlier_detection"]["enforcing_consecutive_gateway_failure"] == 100
    scaled = envoy_config(shop.with_overrides(replicas={"products": 1}))
    assert len(clusters(scaled)["products"]["load_assignment"]["endpoints"][0]["lb_endpoints"]) == 1


def test_gateway_routes_each_service_prefix_to_its_cluster(shop: Topology) -> None:
    gateway = hcm(listeners(envoy_config(shop))["gateway"])
    routes = gateway["route_config"]["virtual_hosts"][0]["routes"]
    assert [(r["match"]["prefix"], r["route"]["cluster"]) for r in routes] == [
        ("/api/v1/products/", "products"),
        ("/api/v1/orders/", "orders"),
    ]
    assert all(r["route"]["prefix_rewrite"] == "/" for r in routes)
    retry = routes[0]["route"]["retry_policy"]
    assert [p["name"] for p in retry["retry_host_predicate"]] == [
        "envoy.retry_host_predicates.previous_hosts"
    ], "a retry must go to another replica than the one that failed"
    names = [f["name"] for f in gateway["http_filters"]]
    assert names == [
        "envoy.filters.http.local_ratelimit",
        "envoy.filters.http.buffer",
        "envoy.filters.http.router",
    ]
    ratelimit, buffer = (f["typed_config"] for f in gateway["http_filters"][:2])
    assert ratelimit["descriptors"][0]["token_bucket"]["max_tokens"] == 7
    assert buffer["max_request_bytes"] == 2048


def test_each_mesh_edge_has_a_fault_filter_on_its_own_runtime_keys(shop: Topology) -> None:
    config = envoy_config(shop)
    for service in ("products", "orders"):
        mesh = hcm(listeners(config)[f"mesh_{service}"])
        fault = mesh["http_filters"][0]
        assert fault["name"] == "envoy.filters.http.fault"
        typed = fault["typed_config"]
        keys = fault_keys(service)
        assert typed["delay_percent_runtime"] == keys["delay_percent"]
        assert typed["abort_percent_runtime"] == keys["abort_percent"]
        # without a configured delay and abort Envoy ignores the runtime keys
        assert typed["delay"]["percentage"]["numerator"] == 0
        assert typed["abort"]["percentage"]["numerator"] == 0
        assert mesh["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["cluster"] == service
    defaults = runtime_defaults(shop)
    assert defaults["mesh.products.delay.percent"] == 0
    assert defaults["mesh.orders.abort.http_status"] == 503
    layers = config["layered_runtime"]["layers"]
    assert [next(iter(k for k in layer if k != "name")) for layer in layers] == [
        "static_layer",
        "admin_layer",
    ]


def test_envoy_traces_to_the_stacks_jaeger(shop: Topology) -> None:
    config = envoy_config(shop)
    otel = clusters(config)["jaeger_otlp"]
    assert port_of(otel["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]) == 40005
    assert port_of(config["admin"]) == 40001


def test_every_listener_samples_parent_based_at_the_gateways_rate(shop: Topology) -> None:
    """A caller's traceparent decides; otherwise ``trace_sampling_percent`` of trace ids
    (Envoy's request-id sampling off: it would override both)."""
    sampled = replace(shop, gateway=replace(shop.gateway, trace_sampling_percent=2.5))
    config = envoy_config(sampled)
    for listener in listeners(config).values():
        manager = hcm(listener)
        assert (
            manager["request_id_extension"]["typed_config"]["use_request_id_for_trace_sampling"]
            is False
        )
        sampler = manager["tracing"]["provider"]["typed_config"]["sampler"]
        assert sampler["name"] == "envoy.tracers.opentelemetry.samplers.parent_based"
        ratio = sampler["typed_config"]["wrapped_sampler"]
        assert ratio["name"] == "envoy.tracers.opentelemetry.samplers.trace_id_ratio_based"
        assert ratio["typed_config"]["sampling_percentage"] == {
            "numerator": 25_000,
            "denominator": "MILLION",
        }


def test_prometheus_scrapes_infrastructure_and_every_replica(shop: Topology) -> None:
    jobs = {j["job_name"]: j for j in prometheus_config(shop)["scrape_configs"]}
    assert set(jobs) == {"prometheus", "envoy", "jaeger", "toxiproxy", "products", "orders"}
    assert jobs["envoy"]["metrics_path"] == "/stats/prometheus"
    assert jobs["envoy"]["static_configs"][0]["targets"] == ["127.0.0.1:40001"]
    products = jobs["products"]["static_configs"]
    assert [t["targets"] for t in products] == [
        ["127.0.0.1:40201"],
        ["127.0.0.1:40202"],
        ["127.0.0.1:40203"],
    ]
    assert [t["labels"]["replica"] for t in products] == ["products-1", "products-2", "products-3"]


def test_toxiproxy_fronts_kafkas_external_listener(shop: Topology) -> None:
    assert toxiproxy_config(shop) == [
        {
            "name": "kafka",
            "listen": "127.0.0.1:40010",
            "upstream": "127.0.0.1:40011",
            "enabled": True,
        },
    ]


def test_a_postgres_stack_adds_a_proxy_in_front_of_the_server(shop: Topology) -> None:
    on_postgres = shop.with_overrides(database="postgres")
    assert (on_postgres.ports.postgres, on_postgres.ports.postgres_server) == (40014, 40015)
    assert toxiproxy_config(on_postgres)[1:] == [
        {
            "name": "postgres",
            "listen": "127.0.0.1:40014",
            "upstream": "127.0.0.1:40015",
            "enabled": True,
        },
    ]
    assert [p.name for p in shop.proxies] == ["kafka"], "SQLite stacks have no database proxy"


def test_kafka_advertises_the_proxy_and_keeps_internal_traffic_off_it(
    shop: Topology, tmp_path: Path
) -> None:
    props = kafka_properties(shop, tmp_path)
    assert props["listeners"] == (
        "INTERNAL://127.0.0.1:40012,EXTERNAL://127.0.0.1:40011,CONTROLLER://127.0.0.1:40013"
    )
    assert props["advertised.listeners"] == (
        "INTERNAL://127.0.0.1:40012,EXTERNAL://127.0.0.1:40010"
    )
    assert props["inter.broker.listener.name"] == "INTERNAL"
    assert props["auto.create.topics.enable"] == "false"
    assert props["log.dirs"] == str(tmp_path)
    assert "node.id=1\n" in render_properties(props)


def test_jaeger_binds_every_listener_to_this_stacks_ports(shop: Topology) -> None:
    config = jaeger_config(shop)
    endpoints = [
        config["receivers"]["otlp"]["protocols"]["http"]["endpoint"],
        config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"],
        config["extensions"]["jaeger_query"]["http"]["endpoint"],
        config["extensions"]["jaeger_query"]["grpc"]["endpoint"],
        config["extensions"]["healthcheckv2"]["http"]["endpoint"],
    ]
    assert endpoints == [f"127.0.0.1:{p}" for p in (40005, 40006, 40003, 40004, 40007)]
    reader = config["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]
    assert reader["prometheus"] == {"host": "127.0.0.1", "port": 40008}


def test_the_gateway_checks_tokens_except_on_public_paths(tmp_path: Path) -> None:
    topology = parse_topology(
        {
            "services": {
                "users": {"issues_tokens": True, "public_paths": ["/login", "/register"]},
                "products": {},
            }
        }
    )
    gateway = hcm(listeners(envoy_config(topology, jwks_file=tmp_path / "jwks.json"))["gateway"])
    jwt = gateway["http_filters"][0]
    assert jwt["name"] == "envoy.filters.http.jwt_authn"
    provider = jwt["typed_config"]["providers"]["users"]
    assert provider["local_jwks"] == {"filename": str(tmp_path / "jwks.json")}
    assert provider["claim_to_headers"] == [{"header_name": "x-client-id", "claim_name": "sub"}]
    rules = jwt["typed_config"]["rules"]
    assert rules == [
        {"match": {"prefix": "/api/v1/users/login"}},
        {"match": {"prefix": "/api/v1/users/register"}},
        {"match": {"prefix": "/api/v1/"}, "requires": {"provider_name": "users"}},
    ]
    assert gateway["local_reply_config"]["body_format"]["content_type"] == (
        "application/problem+json"
    )


def test_without_a_token_issuer_the_gateway_has_no_token_check(
    shop: Topology, tmp_path: Path
) -> None:
    gateway = hcm(listeners(envoy_config(shop, jwks_file=tmp_path / "jwks.json"))["gateway"])
    assert "envoy.filters.http.jwt_authn" not in [f["name"] for f in gateway["http_filters"]]


def test_a_kraft_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """The storage tool would take ``-xyz`` for an option; Kafka's own ids avoid it too."""
    dashed = uuid.UUID(bytes=b"\xfb" + bytes(15))  # base64 "-wAA...": a leading dash
    draws = iter([dashed, uuid.UUID(int=1)])
    monkeypatch.setattr(kafka_admin.uuid, "uuid4", lambda: next(draws))
    made = kafka_admin.new_cluster_id()
    assert not made.startswith("-")
    assert len(made) == 22
