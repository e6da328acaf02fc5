"""The service's tracer providers: SQL statement spans only inside a sampled operation."""

from __future__ import annotations

from pathlib import Path

from opentelemetry import trace

from system.chassis.settings import ServiceSettings
from system.chassis.telemetry import tracing


def test_statement_spans_are_recorded_only_inside_a_sampled_operation(tmp_path: Path) -> None:
    traces = tracing(ServiceSettings(name="t", data_dir=tmp_path, log_json=False))
    operations = traces.provider.get_tracer("operations")
    statements = traces.statements.get_tracer("statements")
    try:
        alone = statements.start_span("SELECT")
        assert not alone.is_recording()  # no trace of its own for a statement outside one
        alone.end()
        with operations.start_as_current_span("POST /") as request:
            assert request.is_recording()  # an operation without a parent starts a trace
            inside = statements.start_span("INSERT")
            assert inside.is_recording()
            assert inside.get_span_context().trace_id == request.get_span_context().trace_id
            inside.end()
        unsampled = trace.NonRecordingSpan(
            trace.SpanContext(1, 2, is_remote=True, trace_flags=trace.TraceFlags(0))
        )
        with trace.use_span(unsampled):
            assert not statements.start_span("UPDATE").is_recording()
    finally:
        traces.shutdown()
