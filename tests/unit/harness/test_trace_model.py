"""Span and Trace over recorded Jaeger answers: parsing, the tree, edges, rendering."""

from __future__ import annotations

from datetime import UTC

from harness.traces import Edge, Match, Trace, spans_from_otlp, traces_from_otlp


def _doc(*spans: dict[str, object], service: str = "svc") -> dict[str, object]:
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]}
    return {"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": list(spans)}]}]}


def _span(span_id: str, **fields: object) -> dict[str, object]:
    return {
        "traceId": "ab" * 16,
        "spanId": span_id,
        "name": "op",
        "startTimeUnixNano": "1000000000",
        "endTimeUnixNano": "1500000000",
        **fields,
    }


def test_spans_carry_service_kind_status_times_and_typed_attributes(confirmed: Trace) -> None:
    [server] = confirmed.find(service="orders", name="POST /", kind="server")
    assert server.trace_id == confirmed.trace_id
    assert server.attributes["http.status_code"] == 202  # an intValue arrives as a string
    assert server.start.tzinfo is UTC
    assert 0 < server.duration_s < 5
    assert server.end > server.start
    assert not server.is_error
    kinds = {span.kind for span in confirmed}
    assert kinds == {"server", "client", "internal", "producer", "consumer"}


def test_the_gateway_span_is_the_root_and_saga_steps_are_children_of_the_order_request(
    confirmed: Trace,
) -> None:
    [root] = confirmed.roots()
    assert (root.service, root.kind) == ("gateway", "server")
    [request] = confirmed.find("orders", "POST /")
    assert confirmed.parent(request) == root
    steps = [s.name for s in confirmed.children(request) if s.name.startswith("saga")]
    assert steps == ["saga reserve", "saga authorize", "saga confirm"]


def test_the_caller_of_a_server_span_is_found_through_the_mesh_hop(confirmed: Trace) -> None:
    [authorize] = confirmed.find("payments", "POST /authorize")
    hop = confirmed.parent(authorize)
    assert hop is not None
    assert hop.service == "mesh-payments"
    caller = confirmed.caller(authorize)
    assert caller is not None
    assert (caller.service, caller.kind) == ("orders", "client")
    assert [a.service for a in confirmed.ancestors(authorize)][:2] == ["mesh-payments", "orders"]


def test_edges_of_a_confirmed_saga_over_http_and_kafka(confirmed: Trace) -> None:
    assert {(e.caller, e.callee) for e in confirmed.edges("http")} >= {
        ("gateway", "orders"),
        ("orders", "products"),
        ("orders", "payments"),
    }
    assert not any(
        e.caller.startswith("mesh-") or e.callee.startswith("mesh-") for e in confirmed.edges()
    )
    assert confirmed.edges("kafka") >= {
        Edge("orders", consumer, "kafka")
        for consumer in ("products", "payments", "notifications", "analytics")
    }
    assert Edge("payments", "analytics", "kafka") in confirmed.edges()
    assert all(e.caller != e.callee for e in confirmed.edges())


def test_find_matches_names_as_globs_and_services_lists_hops_too(confirmed: Trace) -> None:
    reservations = confirmed.find(service="products", name="PUT /reservations/*")
    assert len(reservations) == 1
    assert confirmed.find(name="saga *") == Match(name="saga *").select(confirmed)
    assert {"gateway", "orders", "payments", "mesh-payments"} <= confirmed.services()


def test_render_is_an_indented_tree_with_errors_marked_and_sql_counted(declined: Trace) -> None:
    text = declined.render()
    lines = text.splitlines()
    assert lines[0].startswith(f"trace {declined.trace_id}: {len(declined)} spans")
    assert lines[1].startswith("+0.0 ms  gateway: ingress [server]")
    assert any(line.startswith("  +") and "orders: POST / [server]" in line for line in lines)
    assert any(line.endswith("ERROR") and "orders: POST [client]" in line for line in lines)
    assert lines[-1].endswith("database spans hidden)")
    assert "SELECT" not in text
    assert "SELECT" in declined.render(hide_db=False)
    assert declined.render(limit=3).splitlines()[4].startswith("...")


def test_kinds_and_status_may_be_names_and_a_link_makes_a_kafka_edge() -> None:
    producer = _doc(_span("p1", kind="SPAN_KIND_PRODUCER"), service="orders")
    consumer = _doc(
        _span(
            "c1",
            kind="SPAN_KIND_CONSUMER",
            links=[{"traceId": "ab" * 16, "spanId": "p1"}],
            status={"code": "STATUS_CODE_ERROR"},
        ),
        service="payments",
    )
    spans = spans_from_otlp(producer) + spans_from_otlp(consumer)
    trace = Trace("ab" * 16, tuple(spans))
    assert [s.kind for s in trace] == ["producer", "consumer"]
    assert trace.edges() == {Edge("orders", "payments", "kafka")}
    assert str(Edge("orders", "payments", "kafka")) == "orders -kafka-> payments"
    [error] = [s for s in trace if s.is_error]
    assert error.links == ("p1",)


def test_traces_from_a_search_are_grouped_by_id_earliest_first() -> None:
    late = _span("s2", traceId="cd" * 16, startTimeUnixNano="3000000000")
    early = _span("s1")
    traces = traces_from_otlp(_doc(late, early))
    assert [t.trace_id for t in traces] == ["ab" * 16, "cd" * 16]
    assert Trace("ef" * 16, ()).render() == f"trace {'ef' * 16}: no spans"
