"""Traces from Jaeger, and assertions on them that fail with the rendered trace.

* :mod:`~harness.traces.model` — :class:`Span`, :class:`Trace` (tree, ``edges()``, ``render()``)
* :mod:`~harness.traces.match` — :class:`Match`, which spans a test means
* :mod:`~harness.traces.jaeger` — :class:`Jaeger`, async ``/api/v3`` client; polls to a deadline
* :mod:`~harness.traces.assertions` — ``assert_edges``, ``assert_spans_in_order``, ...
"""

from harness.traces.assertions import (
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
from harness.traces.jaeger import Jaeger, JaegerError, Operation
from harness.traces.match import Match
from harness.traces.model import Edge, Kind, Span, Trace, Via, spans_from_otlp, traces_from_otlp

__all__ = [
    "Edge",
    "Jaeger",
    "JaegerError",
    "Kind",
    "Match",
    "Operation",
    "Span",
    "Trace",
    "Via",
    "assert_duration_under",
    "assert_edges",
    "assert_error_span",
    "assert_kafka_edge",
    "assert_no_edge",
    "assert_no_errors",
    "assert_no_span",
    "assert_parent_child",
    "assert_spans_in_order",
    "spans_from_otlp",
    "traces_from_otlp",
]
