"""Each real component of the local stack, proven to work for real.

Kafka through its Toxiproxy-fronted port, Jaeger's OTLP intake and ``/api/v3`` query,
Prometheus scraping every target, Envoy's gateway (routing, rate limit, size limit) and
mesh (runtime-injected delay and abort on one edge), and a Toxiproxy latency toxic.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.conftest import poll_until
from tests.integration.conftest import TEST_TOPIC

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("stack")]


def url(stack: dict[str, Any], port: str, path: str = "") -> str:
    return f"http://127.0.0.1:{stack['ports'][port]}{path}"


def mesh_url(stack: dict[str, Any], service: str, path: str = "/") -> str:
    envoy = next(p for p in stack["processes"] if p["name"] == "envoy")
    return f"http://127.0.0.1:{envoy['ports'][f'mesh.{service}']}{path}"


# -- Kafka ------------------------------------------------------------------------------
@asynccontextmanager
async def kafka_pair(bootstrap: str) -> AsyncIterator[tuple[AIOKafkaProducer, AIOKafkaConsumer]]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    consumer = AIOKafkaConsumer(
        TEST_TOPIC,
        bootstrap_servers=bootstrap,
        group_id=f"itest-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="latest",
        enable_auto_commit=False,
    )
    await producer.start()
    await consumer.start()
    try:
        await consumer.seek_to_end()
        yield producer, consumer
    finally:
        await consumer.stop()
        await producer.stop()


async def round_trip(producer: AIOKafkaProducer, consumer: AIOKafkaConsumer) -> float:
    """Seconds from send to receive of one message (the key identifies it)."""
    key = secrets.token_hex(8).encode()
    began = time.perf_counter()
    await producer.send_and_wait(TEST_TOPIC, b"ping", key=key)
    async with asyncio.timeout(20):
        async for message in consumer:
            if message.key == key:
                return time.perf_counter() - began
    raise AssertionError("unreachable")


@pytest.mark.asyncio
async def test_kafka_produces_and_consumes_through_the_proxy(stack: dict[str, Any]) -> None:
    bootstrap = f"127.0.0.1:{stack['ports']['kafka']}"
    async with kafka_pair(bootstrap) as (producer, consumer):
        assert await round_trip(producer, consumer) < 5
        brokers = {b.port for b in producer.client.cluster.brokers()}
        assert brokers == {stack["ports"]["kafka"]}, "the broker must advertise the proxy"


@pytest.mark.asyncio
async def test_a_toxiproxy_latency_toxic_slows_the_kafka_round_trip(
    stack: dict[str, Any],
) -> None:
    bootstrap = f"127.0.0.1:{stack['ports']['kafka']}"
    api = url(stack, "toxiproxy", "/proxies/kafka/toxics")
    async with kafka_pair(bootstrap) as (producer, consumer), httpx.AsyncClient() as http:
        baseline = statistics.median([await round_trip(producer, consumer) for _ in range(5)])
        toxic = {
            "name": "itest_latency",
            "type": "latency",
            "stream": "downstream",
            "attributes": {"latency": 300, "jitter": 0},
        }
        (await http.post(api, json=toxic)).raise_for_status()
        try:
            slowed = statistics.median([await round_trip(producer, consumer) for _ in range(3)])
        finally:
            (await http.delete(f"{api}/itest_latency")).raise_for_status()
        recovered = statistics.median([await round_trip(producer, consumer) for _ in range(3)])
    assert slowed - baseline > 0.25, f"baseline {baseline:.3f}s, with toxic {slowed:.3f}s"
    assert recovered < baseline + 0.1, f"baseline {baseline:.3f}s, after {recovered:.3f}s"


# -- Jaeger ----------------------------------------------------------------------------
def test_jaeger_stores_an_otlp_span_and_serves_it_back(stack: dict[str, Any]) -> None:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    now = time.time_ns()
    payload = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "itest-probe"}}]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": span_id,
                                "name": "probe-span",
                                "kind": 2,
                                "startTimeUnixNano": str(now),
                                "endTimeUnixNano": str(now + 1_000_000),
                            }
                        ]
                    }
                ],
            }
        ]
    }
    response = httpx.post(url(stack, "jaeger_otlp_http", "/v1/traces"), json=payload)
    assert response.status_code == 200

    def fetch() -> list[dict[str, Any]] | None:
        got = httpx.get(url(stack, "jaeger_query", f"/api/v3/traces/{trace_id}"))
        if got.status_code != 200:
            return None
        spans: list[dict[str, Any]] = [
            span
            for rs in got.json()["result"]["resourceSpans"]
            for ss in rs["scopeSpans"]
            for span in ss["spans"]
        ]
        return spans

    spans = poll_until(fetch, "the span in Jaeger's query API")
    assert [(s["spanId"], s["name"]) for s in spans] == [(span_id, "probe-span")]


# -- Prometheus ------------------------------------------------------------------------
def test_prometheus_scrapes_every_target(stack: dict[str, Any]) -> None:
    expected = {"prometheus", "envoy", "jaeger", "toxiproxy", "alpha", "beta"}

    def all_up() -> dict[str, int] | None:
        targets = httpx.get(url(stack, "prometheus", "/api/v1/targets")).json()
        active = targets["data"]["activeTargets"]
        up: dict[str, int] = {}
        for target in active:
            if target["health"] == "up":
                up[target["labels"]["job"]] = up.get(target["labels"]["job"], 0) + 1
        return up if set(up) == expected and up["alpha"] == 2 else None

    poll_until(all_up, "every scrape target up", timeout=30)
    query = httpx.get(url(stack, "prometheus", "/api/v1/query"), params={"query": "up == 1"})
    jobs = {r["metric"]["job"] for r in query.json()["data"]["result"]}
    assert jobs == expected


# -- Envoy gateway ---------------------------------------------------------------------
def test_the_gateway_routes_by_service_prefix_over_all_replicas(stack: dict[str, Any]) -> None:
    seen: set[str] = set()
    with httpx.Client() as http:

        def both_replicas_served() -> bool:
            echo = http.get(url(stack, "gateway", "/api/v1/alpha/things/7?x=1")).json()
            assert echo["path"] == "/things/7?x=1"
            seen.add(echo["replica"])
            return seen == {"alpha-1", "alpha-2"}

        poll_until(both_replicas_served, "round robin over both alpha replicas", timeout=10)
        beta = http.get(url(stack, "gateway", "/api/v1/beta/")).json()
        missing = http.get(url(stack, "gateway", "/api/v1/nope/"))
    assert beta["replica"] == "beta-1"
    assert "traceparent" in beta["headers"], "the gateway starts a trace"
    assert missing.status_code == 404


def test_a_burst_past_the_client_rate_limit_gets_429_with_headers(stack: dict[str, Any]) -> None:
    target = url(stack, "gateway", "/api/v1/alpha/limited")
    with httpx.Client() as http:
        burst = [http.get(target, headers={"x-client-id": "bursty"}) for _ in range(12)]
        other = http.get(target, headers={"x-client-id": "calm"})
    statuses = [r.status_code for r in burst]
    assert statuses.count(429) >= 5, statuses
    limited = next(r for r in burst if r.status_code == 429)
    assert limited.headers["x-ratelimit-limit"] == "5"
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert other.status_code == 200, "another client has its own bucket"


def test_an_oversized_body_is_refused_with_413(stack: dict[str, Any]) -> None:
    target = url(stack, "gateway", "/api/v1/beta/upload")
    small = httpx.post(target, content=b"x" * 1000)
    large = httpx.post(target, content=b"x" * 10_000)
    assert small.status_code == 200
    assert small.json()["body_bytes"] == 1000
    assert large.status_code == 413


# -- Envoy mesh faults -----------------------------------------------------------------
def set_runtime(stack: dict[str, Any], values: dict[str, str]) -> None:
    response = httpx.post(url(stack, "envoy_admin", "/runtime_modify"), params=values)
    assert response.status_code == 200, response.text


def timed_get(target: str) -> tuple[int, float]:
    began = time.perf_counter()
    status = httpx.get(target).status_code
    return status, time.perf_counter() - began


@pytest.mark.fault
def test_runtime_keys_inject_delay_and_abort_on_one_mesh_edge_only(
    stack: dict[str, Any],
) -> None:
    alpha, beta = mesh_url(stack, "alpha", "/work"), mesh_url(stack, "beta", "/work")
    base_alpha = statistics.median(timed_get(alpha)[1] for _ in range(5))
    keys = (
        "mesh.alpha.delay.percent",
        "mesh.alpha.delay.duration_ms",
        "mesh.alpha.abort.percent",
        "mesh.alpha.abort.http_status",
    )
    try:
        set_runtime(stack, {keys[0]: "100", keys[1]: "300"})
        delayed = [timed_get(alpha) for _ in range(3)]
        beta_during = [timed_get(beta) for _ in range(3)]
        set_runtime(stack, {keys[0]: "0", keys[2]: "100", keys[3]: "503"})
        aborted = [timed_get(alpha)[0] for _ in range(3)]
    finally:
        set_runtime(stack, dict.fromkeys(keys, ""))
    assert all(status == 200 for status, _ in delayed)
    # the injected 300 ms is a floor on each delayed call, whatever the machine's load
    assert min(t for _, t in delayed) >= 0.3, (base_alpha, delayed)
    assert all(s == 200 and t < base_alpha + 0.2 for s, t in beta_during), beta_during
    assert aborted == [503, 503, 503]
    assert timed_get(alpha)[0] == 200, "removing the keys restores the edge"
