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

SQLAlchemy's adapter runs every cursor operation as ``await_(coroutine)``: from the
greenlet of the statement, a switch to the event loop's greenlet, which awaits the
coroutine, and a switch back, three or four times per statement. The operations here
finish at once (unless a lock is waited for), so they hand back a :class:`Ready` result
instead of a coroutine, and the engine's adapter (:data:`DBAPI`, passed to
``create_async_engine(module=...)``) unwraps a ``Ready`` where it stands, with no switch,
in the greenlets that ask for it (:func:`results_in_place`, by ``in_transaction``);
anything else (a busy statement's wait, the pool's queue) still goes through
``await_only``. A ``Ready`` is awaitable too, for code that awaits these objects directly.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Generator, Iterable, Sequence
from typing import Any, TypeVar

from greenlet import getcurrent
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.pool import PoolResetState
from sqlalchemy.util import await_only

BUSY_BUDGET_S = 5.0
_RETRYABLE = {sqlite3.SQLITE_BUSY, 261}  # SQLITE_BUSY, SQLITE_BUSY_RECOVERY
T = TypeVar("T")


class Ready(Awaitable[T]):
    """An operation's result, there already."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, None, T]:
        yield from ()  # a generator that returns at once
        return self.value


_IN_PLACE = "sqlite_inline_in_place"


def results_in_place() -> None:
    """Let the current greenlet (one of ``greenlet_spawn``) take :class:`Ready` results in
    place. Only where it is asked for: ``AsyncConnection.execute`` insists that its
    greenlet switched at least once (its check for a driver that is not async), so its
    greenlets keep switching."""
    setattr(getcurrent(), _IN_PLACE, True)


def inline_await(awaitable: Awaitable[T]) -> T:
    """The adapter's ``await_``: a :class:`Ready` is unwrapped here in a greenlet that
    asked for it (:func:`results_in_place`); anything else is awaited by the event loop's
    greenlet (``await_only``)."""
    if type(awaitable) is Ready and getattr(getcurrent(), _IN_PLACE, False):
        return awaitable.value  # type: ignore[no-any-return]
    return await_only(awaitable)


def busy(error: sqlite3.Error) -> bool:
    """Whether ``error`` is a lock held by another connection (worth waiting for)."""
    return getattr(error, "sqlite_errorcode", None) in _RETRYABLE


def raw(dbapi_connection: Any) -> sqlite3.Connection | None:
    """The :mod:`sqlite3` connection under a connection of :data:`DBAPI` (what the pool
    holds), for statements run on it directly; ``None`` for any other connection."""
    if type(dbapi_connection) is _AdaptedConnection:
        return dbapi_connection._connection._conn  # type: ignore[no-any-return]
    return None


def rollback_if_open(dbapi_connection: Any, _record: Any, state: PoolResetState) -> None:
    """The pool's ``reset`` listener of an engine made with
    ``pool_reset_on_return=None``: roll back only a transaction that is still open.

    ``Connection.close()`` already rolls back a transaction it holds, so the pool's
    unconditional rollback on return was one more trip through the adapter after every
    commit (~20 µs of CPU per transaction here); this keeps the guarantee (a connection
    goes back to the pool outside any transaction) for the one case left, a connection
    returned without its transaction ended."""
    if state.terminate_only or state.transaction_was_reset:  # closed anyway, or done already
        return
    conn = raw(dbapi_connection)
    if conn is not None and conn.in_transaction:
        conn.rollback()


def _now(call: Callable[[], object], result: T) -> Awaitable[T]:
    """``call()`` at once, then ``result``; a busy database is waited for asynchronously."""
    try:
        call()
    except sqlite3.OperationalError as exc:
        if not busy(exc):
            raise
        return _waiting(call, result)
    return Ready(result)


async def _waiting(call: Callable[[], object], result: T) -> T:
    deadline = time.monotonic() + BUSY_BUDGET_S
    pause = 0.001
    while True:
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.02)
        try:
            call()
            return result
        except sqlite3.OperationalError as exc:
            if not busy(exc) or time.monotonic() >= deadline:
                raise


class Cursor:
    """aiosqlite's ``Cursor`` as SQLAlchemy's adapter uses it."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> Awaitable[Cursor]:
        args = (sql,) if parameters is None else (sql, parameters)
        return _now(lambda: self._cursor.execute(*args), self)

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> Awaitable[Cursor]:
        rows = list(parameters)
        return _now(lambda: self._cursor.executemany(sql, rows), self)

    def fetchone(self) -> Awaitable[Any]:
        return Ready(self._cursor.fetchone())

    def fetchmany(self, size: int | None = None) -> Awaitable[list[Any]]:
        return Ready(self._cursor.fetchmany(size if size is not None else self._cursor.arraysize))

    def fetchall(self) -> Awaitable[list[Any]]:
        return Ready(self._cursor.fetchall())

    def close(self) -> Awaitable[None]:
        self._cursor.close()
        return Ready(None)

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

    def cursor(self) -> Awaitable[Cursor]:
        return Ready(Cursor(self._conn.cursor()))

    def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> Awaitable[Cursor]:
        return Cursor(self._conn.cursor()).execute(sql, parameters)

    def commit(self) -> Awaitable[None]:
        return _now(self._conn.commit, None)

    def rollback(self) -> Awaitable[None]:
        self._conn.rollback()
        return Ready(None)

    def close(self) -> Awaitable[None]:
        self._conn.close()
        return Ready(None)

    def stop(self) -> None:
        self._conn.close()

    def create_function(self, *args: Any, **kw: Any) -> Awaitable[None]:
        self._conn.create_function(*args, **kw)
        return Ready(None)


class _AdaptedConnection(AsyncAdapt_aiosqlite_connection):
    """SQLAlchemy's aiosqlite adapter, unwrapping :class:`Ready` results in place."""

    __slots__ = ()
    await_ = staticmethod(inline_await)


class _InlineDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The DBAPI module of the aiosqlite dialect, for connections made by
    :func:`connect` (``async_creator``) only."""

    def connect(self, *arg: Any, **kw: Any) -> AsyncAdapt_aiosqlite_connection:
        creator = kw.pop("async_creator_fn", None)
        if creator is None:
            raise TypeError("sqlite_inline connects through async_creator=connect(...) only")
        kw.pop("async_fallback", None)
        return _AdaptedConnection(self, await_only(creator(*arg, **kw)))


DBAPI = _InlineDBAPI(__import__("aiosqlite"), sqlite3)
"""``create_async_engine(url, async_creator=connect(...), module=DBAPI)``."""


def connect(path: str, pragmas: Sequence[str]) -> Callable[[], Awaitable[Connection]]:
    """``async_creator`` for ``create_async_engine``: a connection to ``path`` with
    ``pragmas`` applied (``busy_timeout`` is forced to 0, see the module docstring)."""

    async def creator() -> Connection:
        conn = sqlite3.connect(path, check_same_thread=False)
        for pragma in (*pragmas, "PRAGMA busy_timeout=0"):
            await _now(lambda p=pragma: conn.execute(p), None)  # type: ignore[misc]
        return Connection(conn)

    return creator
