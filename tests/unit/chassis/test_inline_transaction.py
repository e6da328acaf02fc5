"""``in_transaction`` on the inline SQLite driver runs without SQLAlchemy's ``Connection``
(``system.chassis.inline_transaction``): it commits and rolls back what both paths ran
(``Prepared`` statements on the DBAPI connection, other statements through a
``Connection`` made when one is needed), calls ``after_commit`` callbacks only after a
commit, calls the engine's commit listeners, and always returns the connection."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, uuid5

import pytest
from sqlalchemy import Connection, event, insert, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from system.chassis.db import after_commit, create_engine, in_transaction, table_of
from system.chassis.inbox import InboxEntry
from system.chassis.inline_transaction import InlineConnection
from system.chassis.prepared import Prepared
from system.chassis.settings import ServiceSettings
from tests.conftest import service_db

NOTE = text("INSERT INTO effect (event_id, note) VALUES (:event_id, :note)")
"""Not prepared: runs through a SQLAlchemy ``Connection``."""
INBOX_ROW = Prepared(insert(table_of(InboxEntry)))
"""Prepared: runs on the DBAPI connection."""


class Refused(Exception):
    pass


def _note(conn: Any, event_id: str) -> None:
    conn.execute(NOTE, {"event_id": event_id, "note": "sqlalchemy"})


async def _notes(maker: async_sessionmaker[AsyncSession]) -> list[str]:
    async with maker() as session:
        return list(await session.scalars(text("SELECT event_id FROM effect ORDER BY event_id")))


def _checked_out(maker: async_sessionmaker[AsyncSession]) -> int:
    return int(maker.kw["bind"].sync_engine.pool.checkedout())


@pytest.fixture
async def sessions(tmp_path: Path) -> Any:
    async with service_db(tmp_path, "inline") as maker:
        yield maker


async def test_prepared_and_sqlalchemy_statements_commit_together(sessions: Any) -> None:
    seen: list[type] = []
    called: list[str] = []

    def work(conn: Any) -> None:
        seen.append(type(conn))
        INBOX_ROW(conn, _inbox_row("e-1"))  # on the DBAPI connection
        _note(conn, "e-2")  # makes a Connection over the same DBAPI connection
        after_commit(conn, lambda: called.append("after"))

    await in_transaction(sessions, work)

    assert seen == [InlineConnection]
    assert await _notes(sessions) == ["e-2"]
    assert await _inbox_ids(sessions) == ["e-1"]
    assert called == ["after"]
    assert _checked_out(sessions) == 0


async def test_a_failure_rolls_back_both_paths_and_forgets_the_callbacks(sessions: Any) -> None:
    called: list[str] = []

    def only_prepared(conn: Any) -> None:
        INBOX_ROW(conn, _inbox_row("e-1"))
        after_commit(conn, lambda: called.append("prepared"))
        raise Refused

    def both(conn: Any) -> None:
        INBOX_ROW(conn, _inbox_row("e-2"))
        _note(conn, "e-3")
        after_commit(conn, lambda: called.append("both"))
        raise Refused

    for work in (only_prepared, both):
        with pytest.raises(Refused):
            await in_transaction(sessions, work)
        assert _checked_out(sessions) == 0

    await in_transaction(sessions, lambda conn: None)  # the same pooled connection again
    assert called == []
    assert await _notes(sessions) == []
    assert await _inbox_ids(sessions) == []


async def test_the_engine_commit_and_rollback_listeners_are_called(sessions: Any) -> None:
    engine = sessions.kw["bind"].sync_engine
    ends: list[str] = []
    event.listen(engine, "commit", lambda _conn: ends.append("commit"))
    event.listen(engine, "rollback", lambda _conn: ends.append("rollback"))

    def refused(conn: Any) -> None:
        INBOX_ROW(conn, _inbox_row("e-2"))
        raise Refused

    await in_transaction(sessions, lambda conn: INBOX_ROW(conn, _inbox_row("e-1")))
    with pytest.raises(Refused):
        await in_transaction(sessions, refused)

    assert ends == ["commit", "rollback"]
    assert await _inbox_ids(sessions) == ["e-1"]


async def test_other_drivers_get_a_connection(tmp_path: Path) -> None:
    settings = ServiceSettings(name="inline-off", data_dir=tmp_path, sqlite_inline=False)
    engine = create_engine(settings)
    seen: list[type] = []
    try:
        await in_transaction(engine, lambda conn: seen.append(type(conn)))
    finally:
        await engine.dispose()
    assert seen == [Connection]


def _inbox_row(event_id: str) -> dict[str, Any]:
    return {
        "consumer": "inline",
        "event_id": uuid5(NAMESPACE_URL, event_id),
        "event_type": event_id,
        "processed_at": datetime.now(UTC),
    }


async def _inbox_ids(maker: async_sessionmaker[AsyncSession]) -> list[str]:
    async with maker() as session:
        return list(await session.scalars(text("SELECT event_type FROM inbox ORDER BY 1")))
