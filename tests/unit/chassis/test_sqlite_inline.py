"""SQLite inline on the event loop: a lock held by another process is waited for without
blocking the loop, and given up after the budget, as ``busy_timeout`` did."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from system.chassis import sqlite_inline
from system.chassis.db import create_engine, create_reader
from system.chassis.settings import ServiceSettings


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


async def test_a_held_lock_is_waited_for_without_blocking_the_loop(tmp_path: Path) -> None:
    writer = create_engine(settings(tmp_path))
    async with writer.begin() as conn:
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
    other = sqlite3.connect(tmp_path / "inline.db", isolation_level=None)  # another replica
    other.execute("BEGIN IMMEDIATE")
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    async def let_go() -> None:
        await asyncio.sleep(0.2)
        other.execute("COMMIT")

    ticker, releaser = asyncio.create_task(tick()), asyncio.create_task(let_go())
    try:
        async with writer.begin() as conn:
            await conn.execute(text("INSERT INTO t DEFAULT VALUES"))
        assert releaser.done()
        assert ticks >= 10  # the loop ran while the insert waited
    finally:
        ticker.cancel()
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
