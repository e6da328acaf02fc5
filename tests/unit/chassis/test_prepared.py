"""``Prepared`` statements: run on the driver's cursor, they give what SQLAlchemy's own
path gives (values, types, defaults, row counts, errors), and they take SQLAlchemy's
path where they must (an ORM session, no transaction begun, a sampled operation, an
expanding ``IN``)."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from advanced_alchemy.base import UUIDv7Base
from advanced_alchemy.types import DateTimeUTC, JsonB
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import Connection, String, bindparam, delete, event, insert, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from system.chassis.db import create_engine, in_transaction, table_of
from system.chassis.prepared import Prepared
from system.chassis.settings import ServiceSettings
from system.chassis.sql_spans import trace_statements


class Parcel(UUIDv7Base):
    """Every kind of column the services' hot statements write: a Python-side default
    (the UUIDv7 id), a scalar default, JSON, a timezone-aware time, a nullable column."""

    __tablename__ = "parcel"

    label: Mapped[str] = mapped_column(String(40), unique=True)
    contents: Mapped[dict[str, Any]] = mapped_column(JsonB)
    sent_at: Mapped[datetime] = mapped_column(DateTimeUTC)
    note: Mapped[str | None] = mapped_column(String(40), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="new")


PARCELS = table_of(Parcel)
ADD = Prepared(insert(PARCELS))
OF_LABEL = Prepared(
    select(PARCELS.c.id, PARCELS.c.label, PARCELS.c.contents, PARCELS.c.sent_at, PARCELS.c.state)
    .where(PARCELS.c.label == bindparam("the_label"))
    .order_by(PARCELS.c.label)
)
ALL = select(
    PARCELS.c.label, PARCELS.c.contents, PARCELS.c.sent_at, PARCELS.c.state, PARCELS.c.note
)
MOVE = Prepared(update(PARCELS).where(PARCELS.c.label == bindparam("the_label")))
DROP = Prepared(delete(PARCELS).where(PARCELS.c.label == bindparam("the_label")))
OF_LABELS = Prepared(
    select(PARCELS.c.label).where(PARCELS.c.label.in_(bindparam("labels", expanding=True)))
)
SENT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(ServiceSettings(name="db", data_dir=tmp_path, log_json=False))
    async with engine.begin() as conn:
        await conn.run_sync(Parcel.metadata.create_all, tables=[PARCELS])
    yield engine
    await engine.dispose()


def contexts(engine: AsyncEngine) -> list[Any]:
    """The execution context of every statement from now on: ``None`` when a statement
    ran on the driver's cursor, SQLAlchemy's own context when it took SQLAlchemy's path."""
    seen: list[Any] = []

    def record(_conn: Any, _cursor: Any, _sql: str, _params: Any, context: Any, *_: Any) -> None:
        seen.append(context)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    return seen


def parcel(label: str, **extra: Any) -> dict[str, Any]:
    return {"label": label, "contents": {"items": [1, 2], "to": label}, "sent_at": SENT, **extra}


async def test_written_and_read_directly_as_sqlalchemy_writes_and_reads(
    engine: AsyncEngine,
) -> None:
    paths = contexts(engine)

    def write(conn: Connection) -> None:
        assert ADD(conn, parcel("a")).rowcount == 1
        assert ADD(conn, [parcel("b", note="fragile"), parcel("c", note=None)]).rowcount == 2

    await in_transaction(engine, write)
    assert paths == [None, None]  # both on the driver's cursor

    def read(conn: Connection) -> tuple[list[Any], Any, Any]:
        by_sqlalchemy = [tuple(row) for row in conn.execute(ALL.order_by(PARCELS.c.label))]
        return by_sqlalchemy, OF_LABEL(conn, {"the_label": "a"}).one(), conn.execute(ALL).first()

    by_sqlalchemy, row, _ = await in_transaction(engine, read)
    assert by_sqlalchemy == [
        ("a", {"items": [1, 2], "to": "a"}, SENT, "new", None),  # the scalar default
        ("b", {"items": [1, 2], "to": "b"}, SENT, "new", "fragile"),
        ("c", {"items": [1, 2], "to": "c"}, SENT, "new", None),
    ]
    assert isinstance(row.id, uuid.UUID)
    assert row.id.version == 7  # the Python-side default, filled in
    assert (row.label, row.contents, row.sent_at, row.state) == (
        "a",
        {"items": [1, 2], "to": "a"},
        SENT,
        "new",
    )
    assert row.sent_at.tzinfo is not None  # the type's result processor ran
    assert row[1] == "a"


async def test_row_counts_scalars_and_empty_results(engine: AsyncEngine) -> None:
    def work(conn: Connection) -> dict[str, Any]:
        ADD(conn, [parcel("a"), parcel("b")])
        later = SENT + timedelta(hours=1)
        return {
            "moved": MOVE(conn, {"the_label": "a", "state": "sent", "sent_at": later}).rowcount,
            "missed": MOVE(conn, {"the_label": "zz", "state": "sent"}).rowcount,
            "state": OF_LABEL(conn, {"the_label": "a"}).one().state,
            "later": OF_LABEL(conn, {"the_label": "a"}).one().sent_at,
            "ids": OF_LABEL(conn, {"the_label": "b"}).scalars(),
            "none": OF_LABEL(conn, {"the_label": "zz"}).first(),
            "scalar": OF_LABEL(conn, {"the_label": "zz"}).scalar(),
            "dropped": DROP(conn, {"the_label": "b"}).rowcount,
            "left": len(OF_LABEL(conn, {"the_label": "b"})),
        }

    result = await in_transaction(engine, work)
    assert result["moved"] == 1
    assert result["missed"] == 0
    assert result["state"] == "sent"
    assert result["later"] == SENT + timedelta(hours=1)
    assert len(result["ids"]) == 1
    assert isinstance(result["ids"][0], uuid.UUID)
    assert result["none"] is None
    assert result["scalar"] is None
    assert result["dropped"] == 1
    assert result["left"] == 0


async def test_a_constraint_violation_is_sqlalchemys_error_and_rolls_back(
    engine: AsyncEngine,
) -> None:
    def twice(conn: Connection) -> None:
        ADD(conn, parcel("a"))
        ADD(conn, parcel("a"))

    with pytest.raises(IntegrityError):
        await in_transaction(engine, twice)

    def count(conn: Connection) -> int:
        return len(conn.execute(ALL).all())

    assert await in_transaction(engine, count) == 0


async def test_a_missing_parameter_is_an_error_on_both_paths(engine: AsyncEngine) -> None:
    def update_without_key(conn: Connection) -> None:
        MOVE(conn, {"state": "sent"})

    with pytest.raises(SQLAlchemyError, match="the_label"):
        await in_transaction(engine, update_without_key)

    def on_sqlalchemys_path(conn: Connection) -> None:
        conn.execute(MOVE.statement, {"state": "sent"})

    with pytest.raises(SQLAlchemyError, match="the_label"):
        await in_transaction(engine, on_sqlalchemys_path)


async def test_sqlalchemys_path_where_a_plan_cannot_go(engine: AsyncEngine) -> None:
    await in_transaction(engine, lambda conn: ADD(conn, [parcel("a"), parcel("b")]))
    paths = contexts(engine)

    def expanding(conn: Connection) -> list[str]:
        return sorted(OF_LABELS(conn, {"labels": ["a", "b", "zz"]}).scalars())

    assert await in_transaction(engine, expanding) == ["a", "b"]

    def outside_a_transaction(conn: Connection) -> int:
        return len(OF_LABEL(conn, {"the_label": "a"}))

    async with engine.connect() as conn:
        assert await conn.run_sync(outside_a_transaction) == 1
    assert len(paths) == 2
    assert all(context is not None for context in paths)


async def test_on_a_session_in_a_transaction_it_runs_on_the_sessions_connection(
    engine: AsyncEngine,
) -> None:
    paths = contexts(engine)
    maker = async_sessionmaker(engine)
    async with maker() as session:
        async with session.begin():
            await session.run_sync(ADD, parcel("a"))
            label = await session.run_sync(lambda s: OF_LABEL(s, {"the_label": "a"}).one().label)
            assert label == "a"
        assert paths == [None, None]
        async with session.begin():  # rolled back with the session's transaction
            await session.run_sync(ADD, parcel("b"))
            await session.rollback()
        assert await session.run_sync(lambda s: len(OF_LABEL(s, {"the_label": "b"}))) == 0


async def test_a_sampled_operation_records_every_statement(engine: AsyncEngine) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    listeners = trace_statements([engine.sync_engine], provider)
    paths = contexts(engine)
    tracer = provider.get_tracer("t")
    try:
        with tracer.start_as_current_span("POST /"):
            await in_transaction(engine, lambda conn: ADD(conn, parcel("a")))
        unsampled = trace.NonRecordingSpan(
            trace.SpanContext(1, 2, is_remote=True, trace_flags=trace.TraceFlags(0))
        )
        with trace.use_span(unsampled):
            await in_transaction(engine, lambda conn: ADD(conn, parcel("b")))
    finally:
        for listener in listeners:
            listener.remove()
    statement, _ = exporter.get_finished_spans()
    assert statement.name.startswith("INSERT ")
    assert paths[0] is not None  # SQLAlchemy's path, with its span
    assert paths[1] is None  # the driver's cursor: no span to record


def test_an_orm_entity_is_refused() -> None:
    with pytest.raises(TypeError, match="not ORM entities"):
        Prepared(select(Parcel))


def test_planned_for_asyncpg() -> None:
    """The PostgreSQL driver the services use (numbered parameters)."""
    from system.chassis.prepared import _plan  # noqa: PLC0415

    keys = ["contents", "label", "sent_at"]
    dialect = postgresql.asyncpg.dialect()  # type: ignore[no-untyped-call]
    compiled = ADD.statement.compile(dialect=dialect, column_keys=keys, for_executemany=True)
    plan = _plan(compiled, dialect, many=True)
    assert plan is not None
    assert "$1" in plan.sql
    assert plan.positional
    assert {name for name, _, _ in plan.binds} == {"label", "contents", "sent_at", "id", "state"}
    assert {name for name, _ in plan.defaults} == {"id", "state"}


async def test_cursor_listeners_are_called_only_for_others_than_the_sql_spans(
    engine: AsyncEngine,
) -> None:
    from system.chassis.prepared import _watched  # noqa: PLC0415

    listeners = trace_statements([engine.sync_engine], TracerProvider())
    try:
        async with engine.connect() as conn:
            assert not await conn.run_sync(_watched)  # the spans record nothing here
            paths = contexts(engine)  # one more listener
            assert await conn.run_sync(_watched)
        await in_transaction(engine, lambda conn: ADD(conn, parcel("a")))
        assert paths == [None]
    finally:
        for listener in listeners:
            listener.remove()


async def test_on_sqlite_it_runs_on_sqlite3_and_waits_for_another_connections_lock(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """On the inline SQLite driver the statement goes to :mod:`sqlite3` itself; when
    another connection (another replica) holds the write lock it is run again through
    the driver's adapter, which waits for the lock without blocking the loop."""
    cursors: list[type] = []

    def record(_conn: Any, cursor: Any, *_: Any) -> None:
        cursors.append(type(cursor))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    await in_transaction(engine, lambda conn: ADD(conn, parcel("a")))
    assert cursors == [sqlite3.Cursor]

    other = sqlite3.connect(tmp_path / "db.db", isolation_level=None)  # another replica
    other.execute("BEGIN IMMEDIATE")
    loop = asyncio.get_running_loop()
    loop.call_later(0.1, other.execute, "COMMIT")
    try:
        began = loop.time()
        await in_transaction(engine, lambda conn: ADD(conn, parcel("b")))
        assert loop.time() - began >= 0.09  # it waited for the lock, and then wrote
    finally:
        other.close()
    labels = await in_transaction(engine, lambda conn: list(conn.scalars(select(PARCELS.c.label))))
    assert sorted(labels) == ["a", "b"]
