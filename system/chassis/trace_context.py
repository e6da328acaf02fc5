"""Trace context in and out, and spans only where a trace is recorded.

The gateway samples a share of requests (1% under load) and every service follows its
decision (parent-based sampling). Under an unsampled parent the SDK still builds a span
object for every operation -- the sampler asked, ids drawn, attributes copied, the context
attached and detached -- only to drop it: 4-8 µs each here, and an order makes ~25 of them
(server, mesh, saga, relay and consumer spans). :func:`span_or_parent` skips that when the
provider's sampler would drop the span anyway (:func:`follows_parent_sampling`): the
parent's context is carried on as it is, so downstream services see the same decision.
Spans of sampled traces are made exactly as before.

:func:`extract` reads a W3C ``traceparent`` (with at most a ``tracestate``: what Envoy and
these services send) in a third of the propagator's time (its regex); anything else goes
through the configured propagator.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import Span, SpanKind, Tracer, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_HEX = frozenset("0123456789abcdef")


def parse_traceparent(value: str, tracestate: str | None = None) -> trace.SpanContext | None:
    """A version-00 ``traceparent`` (and its ``tracestate``) as the W3C propagator reads
    them, else None."""
    parts = value.strip().split("-")
    if len(parts) != 4 or parts[0] != "00" or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    if len(parts[3]) != 2 or not _HEX.issuperset(parts[1] + parts[2] + parts[3]):
        return None
    trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    if not trace_id or not span_id:
        return None
    state = trace.TraceState.from_header([tracestate]) if tracestate else None
    return trace.SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(flags), trace_state=state
    )


def w3c_only() -> bool:
    """Whether the configured propagation is OpenTelemetry's default: W3C trace context
    and baggage, nothing else (checked again only when another propagator is set)."""
    return _is_w3c_default(propagate.get_global_textmap())


@functools.lru_cache(maxsize=4)
def _is_w3c_default(textmap: object) -> bool:
    inner = getattr(textmap, "_propagators", None)  # no public accessor; absent: not ours
    kinds = [type(p) for p in inner or ()]
    return isinstance(textmap, CompositePropagator) and kinds == [
        TraceContextTextMapPropagator,
        W3CBaggagePropagator,
    ]


def extract(carrier: Mapping[str, str]) -> Context:
    """The caller's context from ``carrier`` (a W3C ``traceparent`` is parsed here when
    no baggage comes with it and the default propagators are configured; other keys are
    not theirs; ``propagate.extract`` otherwise)."""
    value = carrier.get("traceparent")
    if value and "baggage" not in carrier and w3c_only():
        remote = parse_traceparent(value, carrier.get("tracestate"))
        if remote is not None:
            return trace.set_span_in_context(trace.NonRecordingSpan(remote))
    return propagate.extract(carrier)


def follows_parent_sampling(provider: TracerProvider | None) -> bool:
    """Whether ``provider`` drops every span whose parent, remote or local, was not
    sampled (the SDK's default, parent-based sampling): then no span object is needed
    under such a parent. False for anything that is not the SDK's provider."""
    provider = provider or trace.get_tracer_provider()
    if not isinstance(provider, SdkTracerProvider):
        return False
    for remote in (True, False):
        parent = trace.NonRecordingSpan(
            trace.SpanContext(
                trace_id=1, span_id=1, is_remote=remote, trace_flags=trace.TraceFlags(0)
            )
        )
        probe = provider.sampler.should_sample(
            trace.set_span_in_context(parent), 1, "probe", SpanKind.INTERNAL
        )
        if probe.decision != Decision.DROP:
            return False
    return True


def unsampled(parent: Context | None = None) -> bool:
    """Whether ``parent`` (or the current context) is a trace the caller chose not to
    record."""
    span_context = trace.get_current_span(parent).get_span_context()
    return span_context.is_valid and not span_context.trace_flags.sampled


@contextmanager
def span_or_parent(
    tracer: Tracer,
    follows: bool,
    name: str,
    *,
    parent: Context | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span]:
    """A current span ``name`` under ``parent`` (the current context if None); when the
    parent is unsampled and ``follows`` (:func:`follows_parent_sampling`), the parent's own
    non-recording span is current instead, and nothing is built."""
    if follows and unsampled(parent):
        token = context.attach(parent) if parent is not None else None
        try:
            yield trace.get_current_span(parent)
        finally:
            if token is not None:
                context.detach(token)
        return
    with tracer.start_as_current_span(
        name, context=parent, kind=kind, attributes=attributes
    ) as span:
        yield span
