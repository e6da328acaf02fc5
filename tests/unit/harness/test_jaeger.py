"""The Jaeger client over recorded ``/api/v3`` answers: queries, 404s, errors, and polling
to a deadline."""

from __future__ import annotations

import copy
import time
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from harness.traces import Jaeger, JaegerError, Operation, Trace, assert_kafka_edge
from tests.unit.harness.cassette import Interaction, replay_client
from tests.unit.harness.conftest import JAEGER


def _trace_answers(recording: list[Interaction], trace_id: str) -> Interaction:
    return next(i for i in recording if i["path"] == f"/api/v3/traces/{trace_id}")


def _without_kafka_consumers(answer: Interaction) -> Interaction:
    """The same trace before the consumers' spans arrived."""
    partial = copy.deepcopy(answer)
    for resource_spans in partial["body"]["result"]["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            scope_spans["spans"] = [s for s in scope_spans["spans"] if s["kind"] != 5]
    return partial


def _not_found(path: str) -> Interaction:
    body = {"error": {"httpCode": 404, "message": "No traces found"}}
    return {"method": "GET", "path": path, "params": {}, "status": 404, "body": body}


async def test_services_and_operations(jaeger: Jaeger) -> None:
    services = await jaeger.services()
    assert {"gateway", "orders", "payments", "mesh-payments"} <= set(services)
    assert services == sorted(services)
    operations = await jaeger.operations("payments")
    assert Operation("POST /authorize", "server") in operations
    assert Operation("orders.events process", "consumer") in operations


async def test_get_trace_returns_the_trace_or_none_on_404(
    jaeger: Jaeger, scenario: dict[str, Any]
) -> None:
    trace = await jaeger.get_trace(scenario["trace_ids"]["confirmed"].upper())
    assert trace is not None
    assert trace.trace_id == scenario["trace_ids"]["confirmed"]
    assert assert_kafka_edge(trace, "orders", "payments")
    assert await jaeger.get_trace(scenario["trace_ids"]["unknown"]) is None


async def test_find_traces_by_service_operation_and_time(
    jaeger: Jaeger, scenario: dict[str, Any]
) -> None:
    before = [datetime.fromisoformat(t) for t in scenario["windows"]["before"]]
    traces = await jaeger.find_traces(
        "payments", since=before[0], until=before[1], operation="POST /authorize", limit=2
    )
    assert len(traces) == 2
    assert [t.start_ns for t in traces] == sorted(t.start_ns for t in traces)
    for trace in traces:
        assert trace.find("payments", "POST /authorize")
        assert before[0] <= trace.start <= before[1] + timedelta(seconds=1)
        assert "gateway" in trace.services()  # a search answers whole traces


async def test_find_traces_answers_empty_when_jaeger_has_none(
    jaeger: Jaeger, scenario: dict[str, Any]
) -> None:
    later = datetime.fromisoformat(scenario["windows"]["after"][1]) + timedelta(hours=1)
    assert await jaeger.find_traces("orders", since=later, until=later + timedelta(hours=1)) == []


async def test_a_naive_datetime_is_refused_before_any_request(jaeger: Jaeger) -> None:
    with pytest.raises(ValueError, match="has no timezone"):
        await jaeger.find_traces("orders", since=datetime(2026, 1, 1))


async def test_other_errors_raise_with_jaeger_s_message() -> None:
    body = {"error": {"httpCode": 400, "message": "malformed parameter trace_id"}}
    answer = {
        "method": "GET",
        "path": "/api/v3/traces/zz",
        "params": {},
        "status": 400,
        "body": body,
    }
    client, _ = replay_client([answer])
    async with client:
        with pytest.raises(JaegerError, match=r"/api/v3/traces/zz -> 400: .*malformed parameter"):
            await Jaeger(JAEGER, client).get_trace("zz")


async def test_wait_for_trace_polls_until_the_condition_holds(
    jaeger_recording: list[Interaction], scenario: dict[str, Any]
) -> None:
    trace_id = scenario["trace_ids"]["confirmed"]
    full = _trace_answers(jaeger_recording, trace_id)
    path = f"/api/v3/traces/{trace_id}"
    client, replay = replay_client([_not_found(path), _without_kafka_consumers(full), full])
    async with client:
        jaeger = Jaeger(JAEGER, client)
        trace = await jaeger.wait_for_trace(
            trace_id, until=lambda t: assert_kafka_edge(t, "orders", "payments"), interval=0.01
        )
    assert len(replay.requests) == 3
    assert trace.find(kind="consumer")


async def test_wait_for_trace_fails_at_the_deadline_showing_the_last_trace(
    jaeger_recording: list[Interaction], scenario: dict[str, Any]
) -> None:
    trace_id = scenario["trace_ids"]["confirmed"]
    partial = _without_kafka_consumers(_trace_answers(jaeger_recording, trace_id))
    client, replay = replay_client([partial])
    began = time.monotonic()
    async with client:
        with pytest.raises(AssertionError) as failed:
            await Jaeger(JAEGER, client).wait_for_trace(
                trace_id,
                until=lambda t: assert_kafka_edge(t, "orders", "payments"),
                timeout=0.3,
                interval=0.05,
            )
    assert 0.25 <= time.monotonic() - began < 2
    assert len(replay.requests) >= 3
    message = str(failed.value)
    assert message.startswith(f"trace {trace_id} not as expected after 0.3 s\n")
    assert "last check: missing kafka edges: orders -kafka-> payments" in message
    assert f"last seen: trace {trace_id}:" in message
    assert "saga authorize" in message


async def test_wait_for_trace_names_a_false_predicate_and_a_trace_never_found() -> None:
    trace_id = "ab" * 16
    client, _ = replay_client([_not_found(f"/api/v3/traces/{trace_id}")])
    async with client:
        with pytest.raises(AssertionError) as failed:
            await Jaeger(JAEGER, client).wait_for_trace(trace_id, timeout=0.1, interval=0.02)
    assert "last check: Jaeger has no span of it\nlast seen: (never found)" in str(failed.value)


async def test_wait_for_trace_says_when_its_condition_returned_false(
    jaeger_recording: list[Interaction], scenario: dict[str, Any]
) -> None:
    trace_id = scenario["trace_ids"]["confirmed"]
    client, _ = replay_client([_trace_answers(jaeger_recording, trace_id)])

    def has_twenty_services(trace: Trace) -> bool:
        return len(trace.services()) >= 20

    async with client:
        with pytest.raises(AssertionError, match="has_twenty_services returned False"):
            await Jaeger(JAEGER, client).wait_for_trace(
                trace_id, until=has_twenty_services, timeout=0.1, interval=0.02
            )


async def test_wait_for_trace_keeps_polling_through_connection_errors() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
        with pytest.raises(AssertionError, match="Jaeger unreachable: ConnectError"):
            await Jaeger(JAEGER, client).wait_for_trace("ab" * 16, timeout=0.1, interval=0.02)
        assert not client.is_closed


async def test_an_injected_client_is_left_open_and_an_own_one_closed() -> None:
    async with httpx.AsyncClient() as client:
        async with Jaeger(JAEGER, client):
            pass
        assert not client.is_closed
    own = Jaeger(JAEGER)
    await own.aclose()
    assert own._client.is_closed
