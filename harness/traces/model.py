"""Spans and traces, read from the OTLP-JSON that Jaeger's ``/api/v3`` returns.

A :class:`Trace` answers the questions a test asks of one request's path through the
system: which spans, in which order, which service called which (:meth:`Trace.edges`),
and a readable tree for failure messages (:meth:`Trace.render`).

The mesh's Envoy listeners report their own server spans under ``mesh-<callee>``; they
are *hops*: :meth:`Trace.edges` and :meth:`Trace.caller` look through them, so
``orders → mesh-payments → payments`` is the edge ``orders → payments``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, Literal

from harness.traces.match import Match

Kind = Literal["internal", "server", "client", "producer", "consumer", "unspecified"]
Via = Literal["http", "kafka"]

_KINDS: dict[int, Kind] = {
    0: "unspecified",
    1: "internal",
    2: "server",
    3: "client",
    4: "producer",
    5: "consumer",
}
_STATUS_ERROR = 2


def is_mesh_hop(service: str) -> bool:
    """The mesh's Envoy spans (``mesh-<callee>``): a hop between two services."""
    return service.startswith("mesh-")


def _datetime(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC)


@dataclass(frozen=True)
class Span:
    """One span, flattened out of its resource and scope."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    service: str
    name: str
    kind: Kind
    start_ns: int
    end_ns: int
    is_error: bool = False
    attributes: Mapping[str, Any] = field(default_factory=dict)
    links: tuple[str, ...] = ()
    """Span ids this span links to (in the same trace)."""

    @property
    def start(self) -> datetime:
        return _datetime(self.start_ns)

    @property
    def end(self) -> datetime:
        return _datetime(self.end_ns)

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9

    def __str__(self) -> str:
        error = " ERROR" if self.is_error else ""
        return f"{self.service}: {self.name} [{self.kind}] {self.duration_s * 1000:.1f} ms{error}"


@dataclass(frozen=True)
class Edge:
    """``caller`` reached ``callee`` over HTTP (client → server) or Kafka (producer → consumer)."""

    caller: str
    callee: str
    via: Via

    def __str__(self) -> str:
        return f"{self.caller} -{self.via}-> {self.callee}"


@dataclass(frozen=True)
class Trace:
    """The spans of one trace, with navigation and a readable rendering."""

    trace_id: str
    spans: tuple[Span, ...]
    is_hop: Callable[[str], bool] = is_mesh_hop

    def __len__(self) -> int:
        return len(self.spans)

    def __iter__(self) -> Iterator[Span]:
        return iter(self.spans)

    @cached_property
    def _by_id(self) -> dict[str, Span]:
        return {span.span_id: span for span in self.spans}

    @cached_property
    def _children(self) -> dict[str | None, list[Span]]:
        children: dict[str | None, list[Span]] = defaultdict(list)
        for span in sorted(self.spans, key=lambda s: s.start_ns):
            key = span.parent_span_id if self.parent(span) is not None else None
            children[key].append(span)
        return children

    @property
    def start_ns(self) -> int:
        return min((span.start_ns for span in self.spans), default=0)

    @property
    def end_ns(self) -> int:
        return max((span.end_ns for span in self.spans), default=0)

    @property
    def start(self) -> datetime:
        return _datetime(self.start_ns)

    @property
    def duration_s(self) -> float:
        """From the first span's start to the last span's end."""
        return (self.end_ns - self.start_ns) / 1e9

    def span(self, span_id: str) -> Span | None:
        return self._by_id.get(span_id)

    def parent(self, span: Span) -> Span | None:
        """The parent span, if it is in this trace."""
        return self._by_id.get(span.parent_span_id) if span.parent_span_id else None

    def roots(self) -> list[Span]:
        """Spans without a parent in this trace (a caller's own span may be missing)."""
        return list(self._children[None])

    def children(self, span: Span) -> list[Span]:
        """Direct children, by start time."""
        return list(self._children.get(span.span_id, []))

    def ancestors(self, span: Span) -> Iterator[Span]:
        """Parent, grandparent, ... up to a root."""
        current = self.parent(span)
        while current is not None:
            yield current
            current = self.parent(current)

    def caller(self, span: Span) -> Span | None:
        """The nearest ancestor that is not a mesh hop."""
        return next((s for s in self.ancestors(span) if not self.is_hop(s.service)), None)

    def find(
        self,
        service: str | None = None,
        name: str | None = None,
        kind: Kind | None = None,
    ) -> list[Span]:
        """Spans matching every given field (``name`` may be a glob: ``PUT /reservations/*``)."""
        return Match(service, name, kind).select(self.spans)

    def services(self) -> set[str]:
        """Every service that reported a span, mesh hops included."""
        return {span.service for span in self.spans}

    def edges(self, via: Via | None = None) -> set[Edge]:
        """Who called whom: HTTP server spans and their caller in another service (through
        mesh hops), Kafka consumer spans and their producer (parent or link)."""
        found: set[Edge] = set()
        for span in self.spans:
            if self.is_hop(span.service):
                continue
            if span.kind == "server":
                caller = self.caller(span)
                if caller is not None and caller.service != span.service:
                    found.add(Edge(caller.service, span.service, "http"))
            elif span.kind == "consumer":
                for producer in self._producers(span):
                    if producer.service != span.service:
                        found.add(Edge(producer.service, span.service, "kafka"))
        return {edge for edge in found if via is None or edge.via == via}

    def _producers(self, consumer: Span) -> Iterator[Span]:
        ids = (consumer.parent_span_id, *consumer.links)
        for span_id in ids:
            span = self._by_id.get(span_id) if span_id else None
            if span is not None and span.kind == "producer":
                yield span

    def render(self, *, hide_db: bool = True, limit: int = 150) -> str:
        """An indented tree, children by start time, offsets from the trace's start.
        Database spans are counted, not listed, unless ``hide_db`` is false."""
        if not self.spans:
            return f"trace {self.trace_id}: no spans"
        lines = [f"trace {self.trace_id}: {len(self.spans)} spans, {self.duration_s * 1000:.1f} ms"]
        hidden = 0

        def walk(span: Span, depth: int) -> None:
            nonlocal hidden
            if hide_db and "db.system" in span.attributes:
                hidden += 1
            elif len(lines) <= limit:
                offset = (span.start_ns - self.start_ns) / 1e6
                lines.append(f"{'  ' * depth}+{offset:.1f} ms  {span}")
            for child in self.children(span):
                walk(child, depth + 1)

        for root in self.roots():
            walk(root, 0)
        if len(lines) > limit:
            lines.append(f"... ({len(lines) - limit} more lines)")
        if hidden:
            lines.append(f"({hidden} database spans hidden)")
        return "\n".join(lines)


def _value(value: Mapping[str, Any]) -> Any:
    """An OTLP ``AnyValue`` as a Python value (64-bit ints arrive as strings in JSON)."""
    if "intValue" in value:
        return int(value["intValue"])
    if "arrayValue" in value:
        return [_value(v) for v in value["arrayValue"].get("values", [])]
    if "kvlistValue" in value:
        return _attributes(value["kvlistValue"].get("values", []))
    return next(iter(value.values()), None)


def _attributes(items: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    return {item["key"]: _value(item.get("value", {})) for item in items}


def _kind(raw: int | str) -> Kind:
    if isinstance(raw, int):
        return _KINDS.get(raw, "unspecified")
    name = raw.removeprefix("SPAN_KIND_").lower()
    return name if name in _KINDS.values() else "unspecified"  # type: ignore[return-value]


def _is_error(status: Mapping[str, Any]) -> bool:
    code = status.get("code", 0)
    return code in (_STATUS_ERROR, "STATUS_CODE_ERROR")


def spans_from_otlp(payload: Mapping[str, Any]) -> list[Span]:
    """Every span of an OTLP-JSON ``{"resourceSpans": [...]}`` document."""
    spans = []
    for resource_spans in payload.get("resourceSpans", []):
        resource = _attributes(resource_spans.get("resource", {}).get("attributes", []))
        service = str(resource.get("service.name", "unknown"))
        for scope_spans in resource_spans.get("scopeSpans", []):
            for raw in scope_spans.get("spans", []):
                spans.append(
                    Span(
                        trace_id=raw["traceId"],
                        span_id=raw["spanId"],
                        parent_span_id=raw.get("parentSpanId") or None,
                        service=service,
                        name=raw.get("name", ""),
                        kind=_kind(raw.get("kind", 0)),
                        start_ns=int(raw["startTimeUnixNano"]),
                        end_ns=int(raw["endTimeUnixNano"]),
                        is_error=_is_error(raw.get("status", {})),
                        attributes=_attributes(raw.get("attributes", [])),
                        links=tuple(link["spanId"] for link in raw.get("links", [])),
                    )
                )
    return spans


def traces_from_otlp(payload: Mapping[str, Any]) -> list[Trace]:
    """The spans of a payload grouped by trace id, earliest trace first."""
    grouped: dict[str, list[Span]] = defaultdict(list)
    for span in spans_from_otlp(payload):
        grouped[span.trace_id].append(span)
    traces = [Trace(trace_id, tuple(spans)) for trace_id, spans in grouped.items()]
    return sorted(traces, key=lambda t: t.start_ns)
