"""SQL statement spans: recorded inside a sampled operation only, named as OpenTelemetry's
SQLAlchemy instrumentation names them, failures marked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError

from system.chassis.sql_spans import trace_statements


@pytest.fixture
def traced(tmp_path: Path) -> Iterator[tuple[Engine, TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    engine = create_engine(f"sqlite:///{tmp_path / 'orders.db'}")
    listeners = trace_statements([engine, engine], provider)
    assert len(listeners) == 1  # a writer doubling as the reader is listened to once
    yield engine, provider, exporter
    for listener in listeners:
        listener.remove()
    engine.dispose()
    provider.shutdown()


def test_a_statement_inside_a_sampled_operation_is_its_child(
    traced: tuple[Engine, TracerProvider, InMemorySpanExporter],
) -> None:
    engine, provider, exporter = traced
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("POST /") as request, engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    statement, operation = exporter.get_finished_spans()
    assert operation.name == "POST /"
    assert statement.name == "SELECT orders"
    assert statement.kind is SpanKind.CLIENT
    assert statement.parent is not None
    assert statement.parent.span_id == request.get_span_context().span_id
    assert dict(statement.attributes or {}) == {
        "db.system": "sqlite",
        "db.name": str(engine.url.database),
        "db.statement": "SELECT 1",
    }


def test_no_span_outside_an_operation_or_inside_an_unsampled_one(
    traced: tuple[Engine, TracerProvider, InMemorySpanExporter],
) -> None:
    engine, _, exporter = traced
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))  # the relay's poll: no trace of its own
        unsampled = trace.NonRecordingSpan(
            trace.SpanContext(1, 2, is_remote=True, trace_flags=trace.TraceFlags(0))
        )
        with trace.use_span(unsampled):
            conn.execute(text("SELECT 2"))
    assert exporter.get_finished_spans() == ()


def test_a_failed_statement_ends_its_span_as_an_error(
    traced: tuple[Engine, TracerProvider, InMemorySpanExporter],
) -> None:
    engine, provider, exporter = traced
    tracer = provider.get_tracer("t")
    with (
        tracer.start_as_current_span("POST /"),
        engine.connect() as conn,
        pytest.raises(OperationalError),
    ):
        conn.execute(text("SELECT * FROM nowhere"))
    statement = exporter.get_finished_spans()[0]
    assert statement.name == "SELECT orders"
    assert statement.status.status_code is StatusCode.ERROR
    assert "nowhere" in (statement.status.description or "")
