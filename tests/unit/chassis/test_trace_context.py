"""Spans only where a trace is recorded: who follows the caller's decision, and what a
span costs nothing for."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from system.chassis.trace_context import extract, follows_parent_sampling, span_or_parent

TRACE, PARENT = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331


def recorded() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def test_only_a_parent_based_sdk_provider_lets_unsampled_spans_be_skipped() -> None:
    assert follows_parent_sampling(TracerProvider())  # the SDK's default sampler
    assert not follows_parent_sampling(TracerProvider(sampler=ALWAYS_ON))
    assert not follows_parent_sampling(trace.NoOpTracerProvider())


def test_under_an_unsampled_parent_no_span_is_built_and_the_parent_stays_current() -> None:
    provider, exporter = recorded()
    tracer = provider.get_tracer("test")
    parent = extract({"traceparent": f"00-{TRACE:032x}-{PARENT:016x}-00", "event-type": "x"})
    with span_or_parent(tracer, True, "step", parent=parent) as span:
        current = trace.get_current_span().get_span_context()
        assert (current.trace_id, current.span_id) == (TRACE, PARENT)
        assert span.get_span_context() == current
    assert trace.get_current_span() is trace.INVALID_SPAN  # detached again
    with span_or_parent(tracer, False, "step", parent=parent):  # a sampler of its own
        pass
    assert exporter.get_finished_spans() == ()  # the default sampler dropped it anyway


def test_under_a_sampled_parent_the_span_is_made_as_ever() -> None:
    provider, exporter = recorded()
    tracer = provider.get_tracer("test")
    sampled = SpanContext(TRACE, PARENT, is_remote=True, trace_flags=TraceFlags(1))
    with trace.use_span(NonRecordingSpan(sampled)), span_or_parent(tracer, True, "step"):
        pass
    [span] = exporter.get_finished_spans()
    assert span.name == "step"
    assert span.parent is not None
    assert span.parent.span_id == PARENT
    assert span.context is not None
    assert span.context.trace_id == TRACE
