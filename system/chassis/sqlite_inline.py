"""SQLite statements run inline on the event loop, behind SQLAlchemy's aiosqlite dialect.

aiosqlite runs every cursor operation on its own thread: a hand-off and a wake-up of the
loop per ``execute``/``fetchall``/``close`` (an order's saga made ~330 of them), for
statements that take microseconds in WAL mode. This module gives the dialect
(``create_async_engine(..., async_creator=connect(path))``) objects with aiosqlite's
interface whose coroutines call :mod:`sqlite3` directly and return without suspending.

The one wait SQLite can impose is a lock held by another connection (two products
replicas write one file). A busy handler would block the whole loop for that long, so the
connection gets ``busy_timeout=0`` and a busy statement is retried *asynchronously*
(backing off from 1 ms to 20 ms) within :data:`BUSY_BUDGET_S`, which is what
``busy_timeout=5000`` did on aiosqlite's thread. ``SQLITE_BUSY_SNAPSHOT`` (a read
snapshot that a retried statement cannot repair) is raised at once, as before.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

BUSY_BUDGET_S = 5.0
_RETRYABLE = {sqlite3.SQLITE_BUSY, 261}  # SQLITE_BUSY, SQLITE_BUSY_RECOVERY
T = TypeVar("T")


async def _retrying(call: Callable[[], T]) -> T:
    deadline = None
    pause = 0.001
    while True:
        try:
            return call()
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) not in _RETRYABLE:
                raise
            now = time.monotonic()
            deadline = deadline or now + BUSY_BUDGET_S
            if now >= deadline:
                raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.02)


class Cursor:
    """aiosqlite's ``Cursor`` as SQLAlchemy's adapter uses it."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> Cursor:
        args = (sql,) if parameters is None else (sql, parameters)
        await _retrying(lambda: self._cursor.execute(*args))
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> Cursor:
        rows = list(parameters)
        await _retrying(lambda: self._cursor.executemany(sql, rows))
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(size if size is not None else self._cursor.arraysize)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid


class _Immediate:
    """Stands in for aiosqlite's request queue (the adapter's ``isolation_level`` setter
    puts ``(future, function)`` on it): runs the function at once."""

    def put_nowait(self, item: tuple[asyncio.Future[Any], Callable[[], Any]]) -> None:
        future, function = item
        try:
            future.set_result(function())
        except Exception as exc:
            future.set_exception(exc)


class Connection:
    """aiosqlite's ``Connection`` as SQLAlchemy's adapter uses it."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._tx = _Immediate()

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    async def cursor(self) -> Cursor:
        return Cursor(self._conn.cursor())

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> Cursor:
        return await (await self.cursor()).execute(sql, parameters)

    async def commit(self) -> None:
        await _retrying(self._conn.commit)

    async def rollback(self) -> None:
        self._conn.rollback()

    async def close(self) -> None:
        self._conn.close()

    def stop(self) -> None:
        self._conn.close()

    async def create_function(self, *args: Any, **kw: Any) -> None:
        self._conn.create_function(*args, **kw)


def connect(path: str, pragmas: Sequence[str]) -> Callable[[], Awaitable[Connection]]:
    """``async_creator`` for ``create_async_engine``: a connection to ``path`` with
    ``pragmas`` applied (``busy_timeout`` is forced to 0, see the module docstring)."""

    async def creator() -> Connection:
        conn = sqlite3.connect(path, check_same_thread=False)
        for pragma in (*pragmas, "PRAGMA busy_timeout=0"):
            await _retrying(lambda p=pragma: conn.execute(p))  # type: ignore[misc]
        return Connection(conn)

    return creator
