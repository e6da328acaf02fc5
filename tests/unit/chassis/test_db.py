"""``insert_if_absent``: the rows a unique key holds are skipped, defaults are applied,
it runs on the driver's cursor (``prepared``), and on SQLAlchemy's path the statement is
compiled once (SQLAlchemy's own on-conflict statements never are). JSON columns are
written by msgspec."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, insert, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine.interfaces import CacheStats
from sqlalchemy.ext.asyncio import async_sessionmaker

from system.chassis.db import InsertIfAbsent, create_engine, insert_if_absent, table_of
from system.chassis.outbox import OutboxMessage
from system.chassis.settings import ServiceSettings
from system.services.orders.models import SagaLease


async def test_insert_if_absent_skips_held_keys_and_is_compiled_once(tmp_path: Path) -> None:
    engine = create_engine(ServiceSettings(name="db", data_dir=tmp_path, log_json=False))
    caching: list[CacheStats | None] = []

    def seen(_conn: Any, _cursor: Any, _sql: str, _params: Any, context: Any, *_: Any) -> None:
        caching.append(None if context is None else context.cache_hit)  # None: direct

    try:
        async with engine.begin() as conn:
            await conn.run_sync(SagaLease.metadata.create_all)
        event.listen(engine.sync_engine, "before_cursor_execute", seen)
        maker = async_sessionmaker(engine, expire_on_commit=False)
        now = datetime.now(UTC)
        async with maker() as session, session.begin():
            first = {"order_id": "o-1", "owner": "a", "expires_at": now}
            assert await insert_if_absent(session, SagaLease, first) == 1
            again = [{**first, "owner": "b"}, {"order_id": "o-2", "owner": "b", "expires_at": now}]
            assert await insert_if_absent(session, SagaLease, again) == 1
            assert await insert_if_absent(session, SagaLease, {**first, "owner": "c"}) == 0
        async with maker() as session:
            rows = (await session.execute(select(SagaLease.order_id, SagaLease.owner))).all()
            assert sorted(map(tuple, rows)) == [("o-1", "a"), ("o-2", "b")]
            assert await session.scalar(select(func.count(SagaLease.id))) == 2  # id defaulted
        assert caching[:3] == [None, None, None]  # on the driver's cursor
        async with engine.begin() as conn:  # SQLAlchemy's path: the second one from its cache
            for owner in ("d", "e"):
                await conn.execute(InsertIfAbsent(table_of(SagaLease)), {**first, "owner": owner})
        assert caching[-2:] == [CacheStats.CACHE_MISS, CacheStats.CACHE_HIT]
    finally:
        await engine.dispose()


def test_insert_if_absent_renders_on_postgresql() -> None:
    sql = str(InsertIfAbsent(table_of(SagaLease)).compile(dialect=postgresql.dialect()))
    assert sql.startswith("INSERT INTO saga_lease (")
    assert sql.endswith(" ON CONFLICT DO NOTHING")


async def test_json_columns_are_written_and_read_by_msgspec(tmp_path: Path) -> None:
    """Compact UTF-8 (the standard library's ``json`` writes ``", "`` and ``\\u00e9``),
    and read back as written."""
    engine = create_engine(ServiceSettings(name="db", data_dir=tmp_path, log_json=False))
    outbox = table_of(OutboxMessage)
    headers = {"traceparent": "00-ab-cd-01", "note": "café"}
    try:
        async with engine.begin() as conn:
            await conn.run_sync(OutboxMessage.metadata.create_all)
            await conn.execute(
                insert(outbox),
                {
                    "event_id": "e-1",
                    "topic": "t",
                    "key": "k",
                    "event_type": "x.y",
                    "event_version": 1,
                    "payload": b"{}",
                    "headers": headers,
                    "created_at": datetime.now(UTC),
                },
            )
        async with engine.connect() as conn:
            stored = (await conn.execute(text("SELECT headers FROM outbox"))).scalar_one()
            read = (await conn.execute(select(outbox.c.headers))).scalar_one()
    finally:
        await engine.dispose()
    assert stored == '{"traceparent":"00-ab-cd-01","note":"café"}'
    assert read == headers
