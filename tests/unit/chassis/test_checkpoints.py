"""WAL checkpoints run on the checkpointer's thread: the service's commits leave the log
to it (they checkpoint only past ``FALLBACK_PAGES``), it copies what it can without
waiting for readers, and with ``sqlite_checkpoint_ms=0`` SQLite's default holds."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from system.chassis import checkpoints
from system.chassis.checkpoints import Checkpointer
from system.chassis.db import create_checkpointer, create_engine, create_reader
from system.chassis.settings import ServiceSettings


def _settings(tmp_path: Path, **overrides: Any) -> ServiceSettings:
    return ServiceSettings(name="ckpt", data_dir=tmp_path, log_json=False, **overrides)


async def _autocheckpoint(settings: ServiceSettings) -> tuple[int, int]:
    writer = create_engine(settings)
    reader = create_reader(settings, writer)
    try:
        async with writer.connect() as conn:
            written = (await conn.execute(text("PRAGMA wal_autocheckpoint"))).scalar_one()
        async with reader.connect() as conn:
            read = (await conn.execute(text("PRAGMA wal_autocheckpoint"))).scalar_one()
        return written, read
    finally:
        await writer.dispose()
        await reader.dispose()


async def test_the_services_connections_leave_checkpoints_to_the_thread(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert await _autocheckpoint(settings) == (checkpoints.FALLBACK_PAGES,) * 2
    assert create_checkpointer(settings) is not None


async def test_without_the_thread_commits_checkpoint_as_sqlite_does(tmp_path: Path) -> None:
    settings = _settings(tmp_path, sqlite_checkpoint_ms=0)
    assert await _autocheckpoint(settings) == (1000, 1000)
    assert create_checkpointer(settings) is None
    postgres = _settings(tmp_path, database_url="postgresql+asyncpg://u@127.0.0.1/x")
    assert create_checkpointer(postgres) is None


def _file_with_a_log(path: Path) -> sqlite3.Connection:
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute(f"PRAGMA wal_autocheckpoint={checkpoints.FALLBACK_PAGES}")
    writer.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, pad TEXT)")
    for n in range(200):
        writer.execute("INSERT INTO t VALUES (?, ?)", (n, "x" * 500))
    return writer


async def test_a_checkpoint_copies_the_log_on_its_own_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "db.sqlite"
    writer = _file_with_a_log(path)
    threads: list[str] = []
    checkpoint = Checkpointer._checkpoint

    def recorded(self: Checkpointer) -> tuple[int, int]:
        threads.append(threading.current_thread().name)
        return checkpoint(self)

    monkeypatch.setattr(Checkpointer, "_checkpoint", recorded)
    checkpointer = Checkpointer(str(path), interval=60)
    try:
        frames, copied = await checkpointer.checkpoint()
        assert frames > 20
        assert copied == frames
        writer.execute("INSERT INTO t VALUES (1000, 'y')")  # the writer goes on meanwhile
    finally:
        await checkpointer.stop()
        writer.close()
    assert threads
    assert all(name.startswith("wal-checkpoint") for name in threads)
    assert threading.current_thread().name not in threads


async def test_a_checkpoint_does_not_wait_for_a_reader(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    writer = _file_with_a_log(path)
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM t").fetchone()  # holds the snapshot it read
    for n in range(200, 260):
        writer.execute("INSERT INTO t VALUES (?, ?)", (n, "x" * 500))
    checkpointer = Checkpointer(str(path), interval=60)
    try:
        frames, copied = await checkpointer.checkpoint()
        assert 0 < copied < frames  # what the reader may still need stays in the log
        reader.execute("COMMIT")
        frames, copied = await checkpointer.checkpoint()
        assert copied == frames
    finally:
        await checkpointer.stop()
        reader.close()
        writer.close()


async def test_the_checkpointer_runs_every_interval_while_the_log_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "db.sqlite"
    writer = _file_with_a_log(path)
    results: list[tuple[int, int]] = []
    checkpoint = Checkpointer._checkpoint

    def recorded(self: Checkpointer) -> tuple[int, int]:
        results.append(checkpoint(self))
        return results[-1]

    monkeypatch.setattr(Checkpointer, "_checkpoint", recorded)
    checkpointer = Checkpointer(str(path), interval=0.02)
    checkpointer.start()
    try:
        for _ in range(250):  # up to 5 s
            if any(frames > 0 and copied == frames for frames, copied in results):
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail(f"the checkpointer never copied the log: {results}")
        await asyncio.sleep(0.3)
        asked = len(results)
        await asyncio.sleep(0.3)
        assert len(results) == asked  # nothing written: the thread is not asked again
        writer.execute("INSERT INTO t VALUES (1000, 'y')")
        for _ in range(250):
            if len(results) > asked:
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("a write was not checkpointed")
    finally:
        await checkpointer.stop()
        writer.close()
