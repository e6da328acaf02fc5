"""The mesh client against a real HTTP server on 127.0.0.1: retries, timeouts, breaker,
metrics and trace context, as a callee sees them."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from multidict import CIMultiDict
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from prometheus_client import CollectorRegistry

from harness.localstack import free_port
from system.chassis.outbound import (
    MeshClient,
    UpstreamFailed,
    UpstreamTimeout,
    UpstreamUnavailable,
    _backoff,
)

pytestmark = pytest.mark.asyncio

RESET_S = 0.2


@dataclass
class Upstream:
    """What the callee saw; ``status`` is the answer of ``/flaky``."""

    url: str = ""
    status: int = 200
    calls: list[tuple[str, str, CIMultiDict[str], bytes]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def count(self, path: str) -> int:
        return sum(1 for _, seen, _, _ in self.calls if seen == path)


@pytest_asyncio.fixture
async def upstream() -> AsyncIterator[Upstream]:
    state = Upstream()

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        state.calls.append((request.method, request.path, request.headers.copy(), body))
        state.arrived.set()
        kind, _, arg = request.path.strip("/").partition("/")
        if kind == "hang" or (kind == "fail-then-hang" and state.count(request.path) > 1):
            await asyncio.sleep(float(arg or 1))
        if kind == "fail-then-hang":
            return web.json_response({}, status=503)
        status = state.status if kind == "flaky" else int(arg) if kind == "status" else 200
        return web.json_response({"path": request.path}, status=status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    state.url = f"http://{host}:{port}"
    yield state
    await runner.cleanup()


@dataclass
class Telemetry:
    registry: CollectorRegistry
    spans: InMemorySpanExporter
    provider: TracerProvider

    def sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def telemetry() -> Telemetry:
    spans = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return Telemetry(CollectorRegistry(), spans, provider)


MakeMesh = Callable[..., MeshClient]


@pytest_asyncio.fixture
async def make_mesh(upstream: Upstream, telemetry: Telemetry) -> AsyncIterator[MakeMesh]:
    clients: list[MeshClient] = []

    def make(**overrides: Any) -> MeshClient:
        settings: dict[str, Any] = {
            "timeout": 0.5,
            "retries": 2,
            "breaker_threshold": 2,
            "breaker_reset_s": RESET_S,
            "registry": telemetry.registry,
            "tracer_provider": telemetry.provider,
        }
        upstreams = {"stock": upstream.url, **overrides.pop("upstreams", {})}
        clients.append(MeshClient(upstreams, **settings | overrides))
        return clients[-1]

    yield make
    for client in clients:
        await client.aclose()
    telemetry.provider.shutdown()


async def test_success(make_mesh: MakeMesh, upstream: Upstream, telemetry: Telemetry) -> None:
    mesh = make_mesh()
    response = await mesh.request("stock", "get", "/status/200")
    assert response.status_code == 200
    assert response.json() == {"path": "/status/200"}
    assert upstream.count("/status/200") == 1
    ok = {"upstream": "stock", "method": "GET", "outcome": "ok"}
    assert telemetry.sample("mesh_client_requests_total", **ok) == 1
    assert telemetry.sample("mesh_client_request_seconds_count", upstream="stock") == 1
    assert telemetry.sample("mesh_client_retries_total", upstream="stock") == 0
    assert mesh.breaker_state("stock") == "closed"


async def test_get_retried_on_503(
    make_mesh: MakeMesh, upstream: Upstream, telemetry: Telemetry
) -> None:
    mesh = make_mesh(breaker_threshold=5)
    with pytest.raises(UpstreamFailed) as failed:
        await mesh.request("stock", "GET", "/status/503")
    assert failed.value.status == 503
    assert failed.value.upstream == "stock"
    assert upstream.count("/status/503") == 3  # retries + 1
    assert telemetry.sample("mesh_client_retries_total", upstream="stock") == 2
    failed_calls = {"upstream": "stock", "method": "GET", "outcome": "failed"}
    assert telemetry.sample("mesh_client_requests_total", **failed_calls) == 1


async def test_post_not_retried(make_mesh: MakeMesh, upstream: Upstream) -> None:
    mesh = make_mesh()
    with pytest.raises(UpstreamFailed):
        await mesh.request("stock", "POST", "/status/503", json={"sku": "a"})
    assert upstream.count("/status/503") == 1


async def test_post_with_idempotency_key_retried(make_mesh: MakeMesh, upstream: Upstream) -> None:
    mesh = make_mesh()
    with pytest.raises(UpstreamFailed):
        await mesh.request(
            "stock",
            "POST",
            "/status/503",
            json={"sku": "a"},
            headers={"Idempotency-Key": "k1"},
            idempotent=True,
        )
    assert [(method, body) for method, _, _, body in upstream.calls] == [
        ("POST", b'{"sku":"a"}')
    ] * 3
    assert all(headers["Idempotency-Key"] == "k1" for _, _, headers, _ in upstream.calls)


async def test_500_not_retried(make_mesh: MakeMesh, upstream: Upstream) -> None:
    mesh = make_mesh()
    with pytest.raises(UpstreamFailed) as failed:
        await mesh.request("stock", "GET", "/status/500")
    assert failed.value.status == 500
    assert upstream.count("/status/500") == 1


async def test_timeout_after_every_attempt(
    make_mesh: MakeMesh, upstream: Upstream, telemetry: Telemetry
) -> None:
    mesh = make_mesh(timeout=0.1)
    started = asyncio.get_running_loop().time()
    with pytest.raises(UpstreamTimeout):
        await mesh.request("stock", "GET", "/hang/2")
    assert asyncio.get_running_loop().time() - started < 1.0
    assert upstream.count("/hang/2") == 3
    timeout = {"upstream": "stock", "method": "GET", "outcome": "timeout"}
    assert telemetry.sample("mesh_client_requests_total", **timeout) == 1


async def test_timeouts_after_a_503_are_a_failure(make_mesh: MakeMesh, upstream: Upstream) -> None:
    mesh = make_mesh(timeout=0.1)
    with pytest.raises(UpstreamFailed, match="3 attempts failed, the last timed out") as failed:
        await mesh.request("stock", "GET", "/fail-then-hang")
    assert failed.value.status is None
    assert isinstance(failed.value.__cause__, UpstreamTimeout)
    assert upstream.count("/fail-then-hang") == 3


async def test_timeout_per_call(make_mesh: MakeMesh, upstream: Upstream) -> None:
    mesh = make_mesh(timeout=0.05)
    response = await mesh.request("stock", "GET", "/hang/0.1", timeout=1.0)
    assert response.status_code == 200
    assert upstream.count("/hang/0.1") == 1


async def test_refused_connection_is_a_failure_not_a_timeout(
    make_mesh: MakeMesh, telemetry: Telemetry
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # a port nobody listens on
    mesh = make_mesh(upstreams={"gone": closed})
    with pytest.raises(UpstreamFailed) as failed:
        await mesh.request("gone", "GET", "/")
    assert failed.value.status is None
    assert telemetry.sample("mesh_client_retries_total", upstream="gone") == 2


async def test_4xx_returned_not_retried_not_a_breaker_failure(
    make_mesh: MakeMesh, upstream: Upstream, telemetry: Telemetry
) -> None:
    mesh = make_mesh(breaker_threshold=2)
    for _ in range(3):
        response = await mesh.request("stock", "GET", "/status/404")
        assert response.status_code == 404
    assert upstream.count("/status/404") == 3
    assert mesh.breaker_state("stock") == "closed"
    client_error = {"upstream": "stock", "method": "GET", "outcome": "client_error"}
    assert telemetry.sample("mesh_client_requests_total", **client_error) == 3


async def open_breaker(mesh: MeshClient, upstream: Upstream) -> None:
    upstream.status = 503
    for _ in range(2):  # breaker_threshold failed calls
        with pytest.raises(UpstreamFailed):
            await mesh.request("stock", "GET", "/flaky")
    assert mesh.breaker_state("stock") == "opened"


async def test_open_breaker_fails_fast(
    make_mesh: MakeMesh, upstream: Upstream, telemetry: Telemetry
) -> None:
    mesh = make_mesh(retries=0)
    await open_breaker(mesh, upstream)
    assert telemetry.sample("mesh_circuit_breaker_state", upstream="stock") == 2
    sent = len(upstream.calls)
    with pytest.raises(UpstreamUnavailable):
        await mesh.request("stock", "GET", "/flaky")
    assert len(upstream.calls) == sent
    unavailable = {"upstream": "stock", "method": "GET", "outcome": "unavailable"}
    assert telemetry.sample("mesh_client_requests_total", **unavailable) == 1


async def test_half_open_trial_success_closes(
    make_mesh: MakeMesh, upstream: Upstream, telemetry: Telemetry
) -> None:
    mesh = make_mesh(retries=0)
    await open_breaker(mesh, upstream)
    upstream.status = 200
    await asyncio.sleep(RESET_S + 0.05)
    response = await mesh.request("stock", "GET", "/flaky")
    assert response.status_code == 200
    assert mesh.breaker_state("stock") == "closed"
    assert telemetry.sample("mesh_circuit_breaker_state", upstream="stock") == 0


async def test_half_open_trial_failure_reopens(
    make_mesh: MakeMesh, upstream: Upstream, telemetry: Telemetry
) -> None:
    mesh = make_mesh(retries=0)
    await open_breaker(mesh, upstream)
    await asyncio.sleep(RESET_S + 0.05)
    with pytest.raises(UpstreamFailed):
        await mesh.request("stock", "GET", "/flaky")
    assert mesh.breaker_state("stock") == "opened"
    assert telemetry.sample("mesh_circuit_breaker_state", upstream="stock") == 2
    with pytest.raises(UpstreamUnavailable):
        await mesh.request("stock", "GET", "/flaky")


async def test_one_trial_at_a_time(
    make_mesh: MakeMesh, upstream: Upstream, telemetry: Telemetry
) -> None:
    mesh = make_mesh(retries=0)
    await open_breaker(mesh, upstream)
    await asyncio.sleep(RESET_S + 0.05)
    upstream.arrived.clear()
    trial = asyncio.create_task(mesh.request("stock", "GET", "/hang/0.2"))
    await upstream.arrived.wait()
    assert mesh.breaker_state("stock") == "half-open"
    assert telemetry.sample("mesh_circuit_breaker_state", upstream="stock") == 1
    with pytest.raises(UpstreamUnavailable):
        await mesh.request("stock", "GET", "/status/200")
    assert (await trial).status_code == 200
    assert upstream.count("/status/200") == 0
    assert mesh.breaker_state("stock") == "closed"


async def test_each_attempt_is_a_client_span_whose_context_reaches_the_callee(
    make_mesh: MakeMesh, upstream: Upstream, telemetry: Telemetry
) -> None:
    mesh = make_mesh(breaker_threshold=5)
    tracer = telemetry.provider.get_tracer("test")
    with tracer.start_as_current_span("handler") as parent, pytest.raises(UpstreamFailed):
        await mesh.request("stock", "GET", "/status/503")
    trace_id = parent.get_span_context().trace_id
    clients = [s for s in telemetry.spans.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert len(clients) == 3 == len(upstream.calls)
    for span, (_, _, headers, _) in zip(clients, upstream.calls, strict=True):
        context = span.get_span_context()
        assert context is not None
        assert headers["traceparent"].startswith(f"00-{trace_id:032x}-{context.span_id:016x}-")
        assert span.parent is not None
        assert span.parent.span_id == parent.get_span_context().span_id
        assert span.attributes is not None
        assert span.attributes["http.status_code"] == 503


async def test_unknown_upstream_names_the_known_ones(make_mesh: MakeMesh) -> None:
    mesh = make_mesh(upstreams={"payments": "http://127.0.0.1:9"})
    with pytest.raises(ValueError, match="'orders'; known: payments, stock"):
        await mesh.request("orders", "GET", "/")
    with pytest.raises(ValueError, match="known: payments, stock"):
        mesh.breaker_state("orders")


async def test_clients_share_a_registry(make_mesh: MakeMesh, telemetry: Telemetry) -> None:
    first, second = make_mesh(), make_mesh()
    await first.request("stock", "GET", "/status/200")
    await second.request("stock", "GET", "/status/200")
    ok = {"upstream": "stock", "method": "GET", "outcome": "ok"}
    assert telemetry.sample("mesh_client_requests_total", **ok) == 2


async def test_a_cancelled_call_is_not_counted(
    make_mesh: MakeMesh, upstream: Upstream, telemetry: Telemetry
) -> None:
    mesh = make_mesh()
    call: Awaitable[Any] = mesh.request("stock", "GET", "/hang/1")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(call, 0.05)
    assert telemetry.sample("mesh_client_request_seconds_count", upstream="stock") == 0


async def test_answered_calls_leave_no_reference_cycles_behind(make_mesh: MakeMesh) -> None:
    """A call's retry controller is freed when the call ends: cyclic garbage is only found
    by the collector, whose full passes stalled the orders service for up to 45 ms. (A
    failed call's exception holds its frames, a cycle of Python's own: rare, and left.)"""
    mesh = make_mesh()
    await mesh.request("stock", "GET", "/status/200")  # the session and the breaker exist
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        await mesh.request("stock", "GET", "/status/200")
        await mesh.request("stock", "POST", "/status/201", json={"a": 1})
        await mesh.request("stock", "GET", "/status/404")  # a 4xx is an answer too
        gc.collect()
        left = [type(o).__qualname__ for o in gc.garbage]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert left == []


async def test_an_unsampled_call_builds_no_span_and_carries_the_callers_context_on(
    make_mesh: MakeMesh, upstream: Upstream, telemetry: Telemetry
) -> None:
    """The gateway chose not to trace this request: no CLIENT span is made (the sampler
    would drop it), and the callee gets the caller's unsampled context, so it too knows."""
    mesh = make_mesh()
    caller = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(0))
    with trace.use_span(NonRecordingSpan(caller)):
        assert (await mesh.request("stock", "GET", "/status/200")).status_code == 200
    assert telemetry.spans.get_finished_spans() == ()
    [(_, _, headers, _)] = upstream.calls
    assert headers["traceparent"] == f"00-{0x1234:032x}-{0x5678:016x}-00"


async def test_the_backoff_is_a_jittered_doubling_with_a_ceiling() -> None:
    for attempt, ceiling in ((1, 0.05), (2, 0.1), (3, 0.2), (4, 0.4), (5, 0.5), (9, 0.5)):
        waits = [_backoff(attempt) for _ in range(200)]
        assert all(0 <= w <= ceiling for w in waits), attempt
        assert max(waits) > ceiling / 2, "drawn over the whole range, not a fixed wait"
