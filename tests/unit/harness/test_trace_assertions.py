"""Each trace assertion passes on a trace that has the property and fails, readably, on one
that does not (the failure shows the claim, what was seen and the rendered trace)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from harness.traces import (
    Match,
    Trace,
    assert_duration_under,
    assert_edges,
    assert_error_span,
    assert_kafka_edge,
    assert_no_edge,
    assert_no_errors,
    assert_no_span,
    assert_parent_child,
    assert_spans_in_order,
)


def _rendered(message: str, trace: Trace) -> bool:
    return f"trace {trace.trace_id}:" in message and "gateway: ingress" in message


def test_assert_edges(confirmed: Trace) -> None:
    assert assert_edges(confirmed, ("gateway", "orders"), ("orders", "payments")) is confirmed
    with pytest.raises(AssertionError) as failed:
        assert_edges(confirmed, ("orders", "payments"), ("payments", "orders"))
    message = str(failed.value)
    assert message.startswith("missing http edges: payments -http-> orders\n")
    assert "edges seen: gateway -http-> orders, orders -http-> payments" in message
    assert _rendered(message, confirmed)


def test_assert_kafka_edge(confirmed: Trace) -> None:
    assert assert_kafka_edge(confirmed, "orders", "payments")
    with pytest.raises(AssertionError, match=r"missing kafka edges: payments -kafka-> orders"):
        assert_kafka_edge(confirmed, "payments", "orders")
    with pytest.raises(AssertionError, match="missing kafka edges"):
        assert_kafka_edge(confirmed, "gateway", "orders")  # an HTTP edge is not a Kafka one


def test_assert_no_edge(confirmed: Trace) -> None:
    assert assert_no_edge(confirmed, "payments", "orders")
    assert assert_no_edge(confirmed, "payments", "orders", via="kafka")
    with pytest.raises(
        AssertionError, match=r"unexpected edges: orders -http-> payments"
    ) as failed:
        assert_no_edge(confirmed, "orders", "payments")
    assert _rendered(str(failed.value), confirmed)


def test_assert_spans_in_order(confirmed: Trace) -> None:
    steps = [Match("orders", f"saga {step}") for step in ("reserve", "authorize", "confirm")]
    picked = assert_spans_in_order(
        confirmed, [Match("gateway"), *steps, Match("payments", kind="consumer")]
    )
    assert [s.name for s in picked[1:4]] == ["saga reserve", "saga authorize", "saga confirm"]
    with pytest.raises(AssertionError) as failed:
        assert_spans_in_order(confirmed, [steps[1], steps[0]])
    message = str(failed.value)
    assert message.startswith(
        "no span(service='orders', name='saga reserve') after step 1 (exists, but only earlier)"
    )
    assert "span(service='orders', name='saga authorize'): orders: saga authorize" in message
    assert _rendered(message, confirmed)
    with pytest.raises(AssertionError, match=r"after step 0 \(no such span\)"):
        assert_spans_in_order(confirmed, [Match("orders", "saga refund")])


def test_assert_parent_child_looks_through_mesh_hops_or_up_the_whole_tree(
    confirmed: Trace,
) -> None:
    authorize = Match("payments", "POST /authorize", "server")
    [found] = assert_parent_child(confirmed, parent=Match("orders", kind="client"), child=authorize)
    assert found.name == "POST /authorize"
    step = Match("orders", "saga authorize")
    assert assert_parent_child(confirmed, parent=step, child=authorize, direct=False)
    with pytest.raises(AssertionError) as failed:
        assert_parent_child(confirmed, parent=step, child=authorize)
    message = str(failed.value)
    assert "is a child of a span(service='orders', name='saga authorize')" in message
    assert "payments: POST /authorize [server]" in message
    assert "<- orders: POST [client]" in message
    assert _rendered(message, confirmed)
    with pytest.raises(AssertionError, match="is a descendant of"):
        assert_parent_child(confirmed, parent=Match("payments"), child=step, direct=False)


def test_assert_no_errors(confirmed: Trace, declined: Trace) -> None:
    assert assert_no_errors(confirmed) is confirmed
    with pytest.raises(
        AssertionError, match=r"^1 error spans\n  orders: POST \[client\]"
    ) as failed:
        assert_no_errors(declined)
    assert _rendered(str(failed.value), declined)


def test_assert_error_span(confirmed: Trace, declined: Trace) -> None:
    [span] = assert_error_span(declined, service="orders", kind="client")
    assert span.attributes["http.status_code"] == 402
    with pytest.raises(AssertionError, match=r"no error span matching span\(service='orders'\)"):
        assert_error_span(confirmed, service="orders")
    with pytest.raises(AssertionError, match="no error span matching"):
        assert_error_span(declined, service="payments")  # a 4xx answer is not a server error


def test_assert_duration_under(confirmed: Trace) -> None:
    assert assert_duration_under(confirmed, 10) is confirmed
    with pytest.raises(
        AssertionError, match=r"^trace took \d\.\d{3} s, expected under 0\.01 s"
    ) as failed:
        assert_duration_under(confirmed, 0.01)
    assert _rendered(str(failed.value), confirmed)
    [confirm] = confirmed.find("orders", "saga confirm")
    assert assert_duration_under(confirm, 1) is confirm
    with pytest.raises(
        AssertionError, match=r"^span orders: saga confirm \[internal\].* expected under 1e-09 s"
    ):
        assert_duration_under(confirm, 1e-9)


def test_assert_no_span_after_a_moment(confirmed: Trace) -> None:
    [authorize] = confirmed.find("payments", "POST /authorize")
    assert_no_span(confirmed, "payments", "POST /authorize", after=authorize.start)
    just_before = authorize.start - timedelta(milliseconds=1)
    assert_no_span(
        confirmed, "payments", "POST /authorize", after=confirmed.start, before=just_before
    )
    with pytest.raises(AssertionError) as failed:
        assert_no_span([confirmed], "payments", kind="server", after=just_before)
    message = str(failed.value)
    assert message.startswith("1 span(service='payments', kind='server') started after")
    assert "payments: POST /authorize [server]" in message
    assert _rendered(message, confirmed)


def test_no_call_went_into_payments_while_the_breaker_was_open(
    breaker_open: Trace, scenario: dict[str, Any]
) -> None:
    """The recorded fault: orders' authorize attempts never left the service while the
    breaker was open; the compensating void reached payments once the fault was over."""
    opened = datetime.fromisoformat(scenario["breaker_opened_at"])
    fault_over = datetime.fromisoformat(scenario["windows"]["during"][1])
    assert len(breaker_open.find("orders", "saga authorize")) > 1
    assert_no_span(breaker_open, "mesh-payments", after=opened, before=fault_over)
    with pytest.raises(AssertionError, match=r"^1 span\(service='mesh-payments'\) started after"):
        assert_no_span(breaker_open, "mesh-payments", after=opened)
