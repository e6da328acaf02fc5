"""SQLite inline on the event loop: a lock held by another process is waited for without
blocking the loop, and given up after the budget, as ``busy_timeout`` did."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import async_sessionmaker

from system.chassis import greenlets, sqlite_inline
from system.chassis.db import InPlaceSession, create_engine, create_reader, in_transaction
from system.chassis.settings import ServiceSettings
from tests.unit.chassis.conftest import Ticks


def settings(tmp_path: Path) -> ServiceSettings:
    return ServiceSettings(name="inline", data_dir=tmp_path, log_json=False)


async def test_statements_run_and_commit_through_sqlalchemy(tmp_path: Path) -> None:
    writer = create_engine(settings(tmp_path))
    reader = create_reader(settings(tmp_path), writer)
    try:
        async with writer.begin() as conn:
            await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
            await conn.execute(text("INSERT INTO t (v) VALUES (:v)"), [{"v": "a"}, {"v": "b"}])
        async with reader.connect() as conn:
            assert (await conn.execute(text("SELECT v FROM t ORDER BY id"))).scalars().all() == [
                "a",
                "b",
            ]
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            with pytest.raises(Exception, match="readonly"):  # query_only on readers
                await conn.execute(text("INSERT INTO t (v) VALUES ('c')"))
    finally:
        await writer.dispose()
        await reader.dispose()


async def test_a_held_lock_is_waited_for_without_blocking_the_loop(
    tmp_path: Path, loop_ticks: Ticks
) -> None:
    writer = create_engine(settings(tmp_path))
    async with writer.begin() as conn:
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
    other = sqlite3.connect(tmp_path / "inline.db", isolation_level=None)  # another replica
    other.execute("BEGIN IMMEDIATE")

    async def let_go() -> None:
        await asyncio.sleep(0.2)
        other.execute("COMMIT")

    releaser = asyncio.create_task(let_go())
    try:
        async with writer.begin() as conn:
            await conn.execute(text("INSERT INTO t DEFAULT VALUES"))
        assert releaser.done()
        assert loop_ticks.count >= 10  # the loop ran while the insert waited
    finally:
        other.close()
        await writer.dispose()


async def test_a_lock_held_beyond_the_budget_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_inline, "BUSY_BUDGET_S", 0.05)
    writer = create_engine(settings(tmp_path))
    async with writer.begin() as conn:
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
    other = sqlite3.connect(tmp_path / "inline.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(Exception, match="database is locked"):
            async with writer.begin() as conn:
                await conn.execute(text("INSERT INTO t DEFAULT VALUES"))
    finally:
        other.execute("ROLLBACK")
        other.close()
        await writer.dispose()


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """What went through the event loop's greenlet (``await_only``) from here on."""
    seen: list[object] = []
    await_only = sqlite_inline.await_only

    def counted(awaitable: Any) -> Any:
        seen.append(awaitable)
        return await_only(awaitable)

    monkeypatch.setattr(sqlite_inline, "await_only", counted)
    return seen


async def test_in_transaction_takes_results_in_place_and_still_waits_for_a_held_lock(
    tmp_path: Path, trips: list[object]
) -> None:
    """In ``in_transaction``'s greenlet a statement's result is taken where it stands: no
    trip through the event loop's greenlet (``await_only``), unless the statement has to
    wait for another process's lock, which the loop then waits for."""
    writer = create_engine(settings(tmp_path))
    async with writer.begin() as conn:  # an AsyncConnection: its greenlet must switch
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
    trips.clear()

    def three_statements(connection: Connection, v: str) -> list[str]:
        connection.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": v})
        connection.execute(text("UPDATE t SET v = v || '!' WHERE v = :v"), {"v": v})
        return list(connection.scalars(text("SELECT v FROM t ORDER BY id")))

    try:
        assert await in_transaction(writer, three_statements, "a") == ["a!"]
        assert trips == []
        other = sqlite3.connect(tmp_path / "inline.db", isolation_level=None)  # another replica
        other.execute("BEGIN IMMEDIATE")
        asyncio.get_running_loop().call_later(0.1, other.execute, "COMMIT")
        try:
            assert await in_transaction(writer, three_statements, "b") == ["a!", "b!"]
        finally:
            other.close()
        assert trips  # the insert waited for the lock through the loop
        async with writer.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar() == 2
    finally:
        await writer.dispose()


async def test_an_async_sessions_statements_take_results_in_place(
    tmp_path: Path, trips: list[object]
) -> None:
    """The service's ``AsyncSession``s (``InPlaceSession`` behind them) take SQLite's
    ready results in place too: no trip through the loop's greenlet per statement."""
    writer = create_engine(settings(tmp_path))
    async with writer.begin() as conn:
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
    trips.clear()
    maker = async_sessionmaker(writer, sync_session_class=InPlaceSession)
    try:
        async with maker() as session, session.begin():
            await session.execute(text("INSERT INTO t (v) VALUES ('a')"))
            await session.execute(text("UPDATE t SET v = 'b'"))
        async with maker() as session:
            assert (await session.scalars(text("SELECT v FROM t"))).all() == ["b"]
        assert trips == []
    finally:
        await writer.dispose()


async def test_a_connection_returned_inside_a_transaction_is_rolled_back(tmp_path: Path) -> None:
    """The pool no longer rolls back every connection it gets back (``Connection.close()``
    does when a transaction is open); a connection returned with its transaction still
    open is rolled back all the same, and one returned after a commit keeps the commit."""
    writer = create_engine(settings(tmp_path))
    async with writer.begin() as conn:
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))

    def left_open() -> None:
        fairy = writer.sync_engine.raw_connection()  # the pool's connection, no Connection
        cursor = fairy.cursor()
        cursor.execute("INSERT INTO t (v) VALUES ('left open')")  # the driver begins
        assert sqlite_inline.raw(fairy.dbapi_connection).in_transaction  # type: ignore[union-attr]
        fairy.close()  # back to the pool, the transaction still open

    def committed(connection: Connection) -> None:
        connection.execute(text("INSERT INTO t (v) VALUES ('committed')"))

    try:
        await greenlets.spawn(left_open)
        await in_transaction(writer, committed)
        async with writer.connect() as conn:
            rows = (await conn.execute(text("SELECT v FROM t"))).scalars().all()
        assert rows == ["committed"]
    finally:
        await writer.dispose()
