"""The chassis' server spans: one per request, named and tagged as the OpenTelemetry ASGI
middleware did, children of the caller's trace, ERROR on 5xx, none for health checks."""

from __future__ import annotations

from pathlib import Path

from litestar import get
from litestar.params import FromPath
from litestar.testing import AsyncTestClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, get_current_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from system.chassis.app import ServiceParts, create_app
from system.chassis.settings import ServiceSettings
from system.chassis.trace_context import parse_traceparent

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"


@get("/ok/{n:int}")
async def ok(n: FromPath[int]) -> dict[str, int]:
    return {"n": n, "traced": int(get_current_span().get_span_context().is_valid)}


@get("/boom")
async def boom() -> None:
    raise RuntimeError("boom")


async def test_server_spans(tmp_path: Path) -> None:
    app = create_app(
        ServiceSettings(name="spans", data_dir=tmp_path, log_json=False, log_level="CRITICAL"),
        ServiceParts(route_handlers=[ok, boom]),
    )
    exporter = InMemorySpanExporter()
    async with AsyncTestClient(app) as client:
        app.state.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
        answer = await client.get("/ok/7?x=1", headers={"traceparent": traceparent})
        assert answer.json() == {"n": 7, "traced": 1}
        assert (await client.get("/boom")).status_code == 500
        assert (await client.get("/nowhere")).status_code == 404
        assert (await client.get("/health/live")).status_code == 200
    spans: dict[str, ReadableSpan] = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"GET /ok/7", "GET /boom", "GET /nowhere"}
    first = spans["GET /ok/7"]
    assert first.kind is SpanKind.SERVER
    assert first.parent is not None
    assert format(first.context.trace_id, "032x") == TRACE_ID
    assert format(first.parent.span_id, "016x") == PARENT_ID
    assert first.attributes is not None
    assert first.attributes["http.status_code"] == 200
    assert first.attributes["http.route"] == "GET /ok/7"
    assert first.attributes["http.target"] == "/ok/7"
    assert first.attributes["http.url"] == "http://testserver.local/ok/7?x=1"
    assert first.attributes["http.method"] == "GET"
    assert first.status.status_code is StatusCode.UNSET
    assert spans["GET /boom"].status.status_code is StatusCode.ERROR
    assert (spans["GET /nowhere"].attributes or {})["http.status_code"] == 404


@get("/context")
async def context_seen() -> dict[str, str]:
    seen = get_current_span().get_span_context()
    return {"trace_id": format(seen.trace_id, "032x"), "sampled": str(seen.trace_flags.sampled)}


async def test_a_caller_that_did_not_sample_gets_no_span_but_its_trace_carries_on(
    tmp_path: Path,
) -> None:
    """The gateway samples 1% of requests under load: the other 99% make no span here,
    and whatever the handler calls still carries the caller's trace id, unsampled."""
    app = create_app(
        ServiceSettings(name="spans", data_dir=tmp_path, log_json=False, log_level="CRITICAL"),
        ServiceParts(route_handlers=[context_seen]),
    )
    exporter = InMemorySpanExporter()
    async with AsyncTestClient(app) as client:
        app.state.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        answer = await client.get(
            "/context", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-00"}
        )
        assert answer.json() == {"trace_id": TRACE_ID, "sampled": "False"}
        assert exporter.get_finished_spans() == ()
        sampled = await client.get(
            "/context", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
        )
        assert sampled.json() == {"trace_id": TRACE_ID, "sampled": "True"}
        assert [s.name for s in exporter.get_finished_spans()] == ["GET /context"]


def test_a_lone_traceparent_is_read_as_the_w3c_propagator_reads_it() -> None:
    w3c = TraceContextTextMapPropagator()
    for value in (
        f"00-{TRACE_ID}-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{PARENT_ID}-00",
        f"00-{TRACE_ID}-{PARENT_ID}-03",
        f"00-{TRACE_ID.upper()}-{PARENT_ID}-01",
        f"00-{'0' * 32}-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{'0' * 16}-01",
        f"00-+{TRACE_ID[1:]}-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{PARENT_ID}-1",
        f"00-{TRACE_ID}-{PARENT_ID}",
        "garbage",
    ):
        for state in (None, "", "vendor=abc,other=1"):
            carrier = {"traceparent": value, **({"tracestate": state} if state is not None else {})}
            expected = get_current_span(w3c.extract(carrier)).get_span_context()
            ours = parse_traceparent(value, state)
            if ours is None:  # then the chassis falls back to the propagator itself
                continue
            assert expected.is_valid, value
            assert (ours.trace_id, ours.span_id, ours.trace_flags, ours.trace_state) == (
                expected.trace_id,
                expected.span_id,
                expected.trace_flags,
                expected.trace_state,
            ), value
    assert parse_traceparent(f"00-{TRACE_ID}-{PARENT_ID}-00") is not None  # what Envoy sends
