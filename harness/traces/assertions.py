"""Assertions on traces that read like the claim and fail with the rendered trace.

Each but :func:`assert_no_span` returns something truthy on success (the trace, or the
spans it found), so it can also be the condition of :meth:`Jaeger.wait_for_trace`::

    paid = lambda t: assert_kafka_edge(t, "orders", "payments")
    trace = await jaeger.wait_for_trace(trace_id, until=paid)
    assert_edges(trace, ("gateway", "orders"), ("orders", "payments"), via="http")
    assert_spans_in_order(trace, [Match("orders", "saga reserve"), Match("orders", "saga *")])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from harness.traces.match import Match
from harness.traces.model import Edge, Kind, Span, Trace, Via


def _fail(trace: Trace, claim: str, detail: str = "") -> AssertionError:
    body = f"\n{detail}" if detail else ""
    return AssertionError(f"{claim}{body}\n{trace.render()}")


def _listed(items: Iterable[object]) -> str:
    return ", ".join(sorted(str(item) for item in items)) or "none"


def assert_edges(trace: Trace, *pairs: tuple[str, str], via: Via = "http") -> Trace:
    """Each ``(caller, callee)`` pair called over ``via`` in this trace."""
    edges = trace.edges(via)
    missing = [
        Edge(caller, callee, via)
        for caller, callee in pairs
        if Edge(caller, callee, via) not in edges
    ]
    if missing:
        raise _fail(
            trace, f"missing {via} edges: {_listed(missing)}", f"edges seen: {_listed(edges)}"
        )
    return trace


def assert_kafka_edge(trace: Trace, producer: str, consumer: str) -> Trace:
    """``consumer`` processed a message ``producer`` published in this trace."""
    return assert_edges(trace, (producer, consumer), via="kafka")


def assert_no_edge(trace: Trace, caller: str, callee: str, via: Via | None = None) -> Trace:
    """``caller`` never reached ``callee`` in this trace (e.g. the breaker held the call)."""
    found = [e for e in trace.edges(via) if (e.caller, e.callee) == (caller, callee)]
    if found:
        raise _fail(trace, f"unexpected edges: {_listed(found)}")
    return trace


def assert_spans_in_order(trace: Trace, matches: Sequence[Match]) -> list[Span]:
    """Spans matching ``matches`` started in this order (other spans may come between);
    returns the spans picked, the earliest that fits at each step."""
    ordered = sorted(trace.spans, key=lambda s: s.start_ns)
    picked: list[Span] = []
    position = 0
    for match in matches:
        found = next((i for i in range(position, len(ordered)) if match(ordered[i])), None)
        if found is None:
            steps = "\n".join(f"  {m}: {s}" for m, s in zip(matches, picked, strict=False))
            anywhere = "exists, but only earlier" if match.select(trace.spans) else "no such span"
            raise _fail(
                trace,
                f"no {match} after step {len(picked)} ({anywhere})",
                f"in order so far:\n{steps or '  (nothing)'}",
            )
        picked.append(ordered[found])
        position = found + 1
    return picked


def assert_parent_child(
    trace: Trace, *, parent: Match, child: Match, direct: bool = True
) -> list[Span]:
    """Some ``child`` span descends from a ``parent`` span: its caller (the nearest
    ancestor that is not a mesh hop) when ``direct``, any ancestor otherwise."""
    children = child.select(trace.spans)
    found = [
        span
        for span in children
        if (
            (caller := trace.caller(span)) is not None and parent(caller)
            if direct
            else any(parent(a) for a in trace.ancestors(span))
        )
    ]
    if not found:
        detail = "\n".join(f"  {s} <- {trace.caller(s) or 'root'}" for s in children)
        relation = "a child" if direct else "a descendant"
        raise _fail(
            trace,
            f"no {child} is {relation} of a {parent}",
            f"{child} spans and their callers:\n{detail or '  (none)'}",
        )
    return found


def assert_no_errors(trace: Trace) -> Trace:
    """No span has status ERROR."""
    errors = [span for span in trace.spans if span.is_error]
    if errors:
        raise _fail(trace, f"{len(errors)} error spans", "\n".join(f"  {s}" for s in errors))
    return trace


def assert_error_span(
    trace: Trace, service: str | None = None, name: str | None = None, kind: Kind | None = None
) -> list[Span]:
    """At least one span with status ERROR matches; returns those spans."""
    match = Match(service, name, kind)
    errors = [span for span in match.select(trace.spans) if span.is_error]
    if not errors:
        raise _fail(trace, f"no error span matching {match}")
    return errors


def assert_duration_under(subject: Trace | Span, seconds: float) -> Trace | Span:
    """The trace (first start to last end) or span took less than ``seconds``."""
    if subject.duration_s >= seconds:
        claim = f"took {subject.duration_s:.3f} s, expected under {seconds:g} s"
        if isinstance(subject, Trace):
            raise _fail(subject, f"trace {claim}")
        raise AssertionError(f"span {subject} {claim}")
    return subject


def assert_no_span(
    traces: Trace | Iterable[Trace],
    service: str | None = None,
    name: str | None = None,
    kind: Kind | None = None,
    *,
    after: datetime,
    before: datetime | None = None,
) -> None:
    """No matching span started after ``after`` (and before ``before``) in any of
    ``traces``: e.g. no call into payments while its breaker was open."""
    match = Match(service, name, kind)
    pool = [traces] if isinstance(traces, Trace) else list(traces)
    low = after.timestamp() * 1e9
    high = before.timestamp() * 1e9 if before is not None else float("inf")
    late = [
        (trace, span)
        for trace in pool
        for span in match.select(trace.spans)
        if low < span.start_ns < high
    ]
    if late:
        trace, _ = late[0]
        until = f" and before {before.isoformat()}" if before is not None else ""
        listed = "\n".join(f"  {span.start.isoformat()} {span}" for _, span in late[:20])
        raise _fail(trace, f"{len(late)} {match} started after {after.isoformat()}{until}", listed)
