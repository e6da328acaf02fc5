"""The service's own database: SQLite by default, or any SQLAlchemy async URL
(PostgreSQL via asyncpg). Schema is created at start-up.

SQLite gets two engines on one file: a single *writer* connection (several writers wait
on the file lock: p99 ~850 ms under concurrent writes here; one connection with
``synchronous=NORMAL`` gives ~35 ms), and a small pool of ``query_only`` *reader*
connections that read-only handlers use, so catalog reads do not queue behind writes
(WAL lets readers and the writer run at once). On PostgreSQL both are one pooled engine.

SQLite statements run inline on the event loop (``system.chassis.sqlite_inline``: no
thread hop per cursor operation, a busy lock waited for asynchronously);
``<SERVICE>_SQLITE_INLINE=false`` goes back to aiosqlite's thread.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

import asyncpg  # type: ignore[import-untyped]
import msgspec
from sqlalchemy import Connection, Engine, Insert, Table, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry, PoolProxiedConnection
from sqlalchemy.util import await_only

from system.chassis import checkpoints, greenlets, inline_transaction, sqlite_inline
from system.chassis.prepared import Prepared
from system.chassis.settings import ServiceSettings

SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=5000",
    "PRAGMA foreign_keys=ON",
)
READER_PRAGMAS = (*SQLITE_PRAGMAS, "PRAGMA query_only=ON")
P = ParamSpec("P")
T = TypeVar("T")

_ENCODE = msgspec.json.Encoder().encode
JSON_COLUMNS: dict[str, Any] = {
    "json_serializer": lambda value: _ENCODE(value).decode(),
    "json_deserializer": msgspec.json.Decoder().decode,
}
"""How JSON columns (events' data, outbox headers) are written and read: by msgspec, on
every engine. The standard library's ``json`` took ~6.7 µs to write an event's data
here and msgspec 0.8 µs, several times per order in each service."""


def _pragmas(settings: ServiceSettings, *, reader: bool) -> tuple[str, ...]:
    pragmas = READER_PRAGMAS if reader else SQLITE_PRAGMAS
    if settings.sqlite_checkpoint_ms:  # a Checkpointer checkpoints; commits only if it lags
        pragmas = (*pragmas, f"PRAGMA wal_autocheckpoint={checkpoints.FALLBACK_PAGES}")
    return pragmas


def _applying(pragmas: tuple[str, ...]) -> Callable[[Any, Any], None]:
    def apply(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        for pragma in pragmas:
            cursor.execute(pragma)
        cursor.close()

    return apply


def _sqlite_path(settings: ServiceSettings) -> str:
    """The SQLite file of ``settings.database`` (``:memory:`` when it names none)."""
    return make_url(settings.database).database or ":memory:"


def _sqlite_engine(settings: ServiceSettings, connections: int, *, reader: bool) -> AsyncEngine:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    pragmas = _pragmas(settings, reader=reader)
    pool: dict[str, Any] = {
        "poolclass": AsyncAdaptedQueuePool,
        "pool_size": connections,
        "max_overflow": 0,
        "pool_timeout": 30,
    }
    if settings.sqlite_inline:
        creator = sqlite_inline.connect(_sqlite_path(settings), pragmas)
        engine = create_async_engine(
            settings.database,
            async_creator=creator,
            **JSON_COLUMNS,
            module=sqlite_inline.DBAPI,
            pool_reset_on_return=None,  # a transaction still open is rolled back by:
            **pool,
        )
        event.listen(engine.sync_engine.pool, "reset", sqlite_inline.rollback_if_open)
        return engine
    engine = create_async_engine(settings.database, **JSON_COLUMNS, **pool)
    event.listen(engine.sync_engine, "connect", _applying(pragmas))
    return engine


def _ping_at_checkout(
    _dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
) -> None:
    """The pool's ``checkout`` listener on asyncpg: one simple query (``SELECT 1``), and a
    connection that does not answer is replaced (``DisconnectionError`` makes the pool
    discard it and check out another), so a connection the server or a fault dropped
    while it sat in the pool never reaches a transaction.

    SQLAlchemy's ``pool_pre_ping`` does the same in three round trips on asyncpg
    (``BEGIN``, ``;``, ``ROLLBACK``, for PgBouncer's transaction mode, which the stack
    does not use): at 40 orders/s that was 10.5 pings an order, each crossing Toxiproxy."""
    connection = record.driver_connection
    if connection is None:
        raise DisconnectionError("the pool handed out a closed connection")
    try:
        await_only(connection.execute("SELECT 1"))
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DisconnectionError(f"the pooled connection did not answer: {exc!r}") from exc


def create_engine(settings: ServiceSettings) -> AsyncEngine:
    """The engine every transaction that may write uses."""
    if settings.is_sqlite:
        return _sqlite_engine(settings, 1, reader=False)
    on_asyncpg = make_url(settings.database).get_driver_name() == "asyncpg"
    engine = create_async_engine(
        settings.database,
        **JSON_COLUMNS,
        pool_size=settings.database_pool_size,
        max_overflow=0,
        pool_pre_ping=not on_asyncpg,
    )
    if on_asyncpg:
        event.listen(engine.sync_engine.pool, "checkout", _ping_at_checkout)
    return engine


def create_checkpointer(settings: ServiceSettings) -> checkpoints.Checkpointer | None:
    """The thread that checkpoints the SQLite file's WAL (none on other databases, or
    with ``sqlite_checkpoint_ms=0``: then commits checkpoint, as SQLite does by default)."""
    if not settings.is_sqlite or not settings.sqlite_checkpoint_ms:
        return None
    path = _sqlite_path(settings)
    if path == ":memory:":
        return None
    return checkpoints.Checkpointer(path, settings.sqlite_checkpoint_ms / 1000)


def create_reader(settings: ServiceSettings, writer: AsyncEngine) -> AsyncEngine:
    """The engine read-only handlers use (the writer itself unless on SQLite)."""
    if settings.is_sqlite:
        return _sqlite_engine(settings, settings.sqlite_readers, reader=True)
    return writer


def forget_at_transaction_end(key: str) -> None:
    """Keep ``session.info[key]`` for one transaction: it is dropped when the session's
    outermost transaction ends, committed or rolled back (a savepoint's end keeps it), so
    a session reused for its next transaction starts without it."""

    def forget(session: Session, transaction: SessionTransaction) -> None:
        if transaction.parent is None:
            session.info.pop(key, None)

    event.listen(Session, "after_transaction_end", forget)


class InPlaceSession(Session):
    """The synchronous session of the service's ``AsyncSession``: every operation of an
    ``AsyncSession`` runs one of these methods in a greenlet of its own, and lets that
    greenlet take SQLite's ready results in place (``sqlite_inline.results_in_place``), as
    :func:`in_transaction` does, instead of a trip through the event loop's greenlet for
    each cursor operation. (A greenlet of ``AsyncConnection.execute`` must switch at least
    once; those run no method of a session.)"""

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        sqlite_inline.results_in_place()
        return super().execute(*args, **kwargs)

    def flush(self, objects: Any = None) -> None:
        sqlite_inline.results_in_place()
        super().flush(objects)

    def connection(self, *args: Any, **kwargs: Any) -> Connection:
        """The session's connection, for statements run on it directly (``prepared``)."""
        sqlite_inline.results_in_place()
        return super().connection(*args, **kwargs)

    def rollback(self) -> None:
        sqlite_inline.results_in_place()
        super().rollback()

    def close(self) -> None:
        sqlite_inline.results_in_place()
        super().close()


@event.listens_for(InPlaceSession, "before_commit")
def _commit_in_place(_session: Session) -> None:
    """Every commit, ``AsyncSession.commit`` or the end of ``async with session.begin()``
    (which commits the transaction, not the session); the connection goes back to the
    pool in the same greenlet."""
    sqlite_inline.results_in_place()


Executor = Session | Connection
"""What a synchronous statement function runs on: the Core ``Connection`` of
:func:`in_transaction`, or an ORM ``Session`` (``AsyncSession.run_sync``)."""

_AFTER_COMMIT = "chassis.after_commit"


def after_commit(connection: Connection, callback: Callable[[], None]) -> None:
    """Call ``callback`` once the :func:`in_transaction` holding ``connection`` has
    committed; not at all if it rolls back. Registering one callback twice calls it once."""
    connection.info.setdefault(_AFTER_COMMIT, {})[callback] = None


async def in_transaction(
    source: async_sessionmaker[AsyncSession] | AsyncEngine,
    work: Callable[Concatenate[Connection, P], T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """``work(connection, *args, **kwargs)`` in a transaction of its own, committed when
    it returns and rolled back if it raises, all in one greenlet: a Core ``Connection``
    of ``source``'s engine is checked out, used, committed and returned in it.

    Every awaited statement, ``begin``, ``commit`` and ``close`` of an ``AsyncSession``
    starts a greenlet of its own, and each new greenlet maps and unmaps a frame stack
    chunk (~10 µs here) on top of the async layer's own cost; leaving an ``async with``
    of an ``AsyncSession`` also closes it in a task of its own (shielded from
    cancellation), two more turns of the event loop. And the ORM ``Session`` itself
    (its construction, its transaction's state machine, ``Session.execute`` routing each
    statement) cost more than a Core statement on its connection. A one-statement
    transaction took 79 µs of CPU here (SQLite's results taken in place, see
    ``sqlite_inline``), against 142 µs for a synchronous ``Session`` in one greenlet and
    ~195 µs for an ``AsyncSession`` (``benchmarks/transaction_cost.py``; on the twelfth
    session's slower machine, on a reused greenlet (``greenlets.spawn``): 100, 216 and
    367 µs, bare ``sqlite3`` 19). So ``work`` gets
    Core's API (``execute``, ``scalars``, ``scalar``: statements, no unit of work) and
    :func:`after_commit` for what must follow the commit. On the inline SQLite driver it
    gets a stand-in for the ``Connection`` (:mod:`system.chassis.inline_transaction`: no
    ``Connection`` or ``Transaction`` object unless a statement takes SQLAlchemy's path),
    which took a one-``Prepared``-statement transaction from 77-109 to 47-76 µs here.

    ``work`` runs on the event loop's thread and must not block: statements only, no
    network. Cancelling the awaiting task still ends the transaction: the greenlet's
    pending pool or statement wait raises, and the ``with`` blocks roll back and return
    the connection."""
    engine = source.sync_engine if isinstance(source, AsyncEngine) else _engine_of(source)
    inline = engine.dialect.loaded_dbapi is sqlite_inline.DBAPI

    def committed() -> tuple[T, dict[Callable[[], None], None]]:
        sqlite_inline.results_in_place()
        if inline:
            result, callbacks = inline_transaction.run(engine, _AFTER_COMMIT, work, *args, **kwargs)
            return result, callbacks or {}
        with engine.connect() as connection:
            connection.info.pop(_AFTER_COMMIT, None)  # left by a connection used elsewhere
            try:
                with connection.begin():
                    result = work(connection, *args, **kwargs)
            finally:
                callbacks = connection.info.pop(_AFTER_COMMIT, None) or {}
            return result, callbacks

    result, callbacks = await greenlets.spawn(committed)
    for callback in callbacks:
        callback()
    return result


@dataclass(frozen=True)
class Transactions:
    """The service's two session makers, for handlers that run a whole transaction as
    one synchronous function (:func:`in_transaction`) instead of the request's
    ``db_session``: ``app.state.transactions``. The request's session costs a session,
    a flush, a commit and a close, each a greenlet, on top of the work."""

    writer: async_sessionmaker[AsyncSession]
    reader: async_sessionmaker[AsyncSession]
    """The reader pool on SQLite (never waits for the one writer), the writer elsewhere."""

    async def write(
        self, work: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``work`` in a transaction on the writer, committed when it returns."""
        return await in_transaction(self.writer, work, *args, **kwargs)

    async def read(
        self, work: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``work`` in a read-only transaction (on SQLite, writing in it fails)."""
        return await in_transaction(self.reader, work, *args, **kwargs)


def _engine_of(maker: async_sessionmaker[AsyncSession]) -> Engine:
    """The synchronous engine the sessions of ``maker`` are bound to."""
    bind = maker.kw.get("bind")
    if not isinstance(bind, AsyncEngine):
        raise TypeError(f"{maker!r} is not bound to one AsyncEngine")
    return bind.sync_engine


def table_of(model: Any) -> Table:
    """The Core table behind an ORM model (or the table itself), for Core statements."""
    table = getattr(model, "__table__", model)
    if not isinstance(table, Table):
        raise TypeError(f"{model!r} has no table")
    return table


class InsertIfAbsent(Insert):
    """``INSERT ... ON CONFLICT DO NOTHING`` (SQLite and PostgreSQL) that SQLAlchemy can
    cache: the dialects' own ``on_conflict_do_nothing()`` statements have no cache key in
    SQLAlchemy 2.0, so each run was compiled anew (most of a consumer's SQL CPU)."""

    inherit_cache = True


@compiles(InsertIfAbsent, "sqlite")
@compiles(InsertIfAbsent, "postgresql")
def _insert_if_absent_sql(element: InsertIfAbsent, compiler: Any, **kw: Any) -> str:
    return f"{compiler.visit_insert(element, **kw)} ON CONFLICT DO NOTHING"


@compiles(InsertIfAbsent)
def _insert_if_absent_elsewhere(element: InsertIfAbsent, compiler: Any, **kw: Any) -> str:
    raise NotImplementedError(f"insert_if_absent on {compiler.dialect.name}")


def insert_if_absent_in(
    session: Executor, model: Any, rows: dict[str, Any] | list[dict[str, Any]]
) -> int:
    """:func:`insert_if_absent` in the caller's greenlet (inside ``run_sync``, e.g. by
    :func:`in_transaction`)."""
    return max(0, _insert_if_absent(table_of(model))(session, rows).rowcount)


async def insert_if_absent(
    session: AsyncSession, model: Any, rows: dict[str, Any] | list[dict[str, Any]]
) -> int:
    """``INSERT ... ON CONFLICT DO NOTHING`` of ``rows`` into ``model``'s table, on SQLite
    or PostgreSQL: the rows a unique key already holds are skipped. Returns how many rows
    were inserted. One Core statement where the ORM needs a SELECT, an INSERT and its
    unit of work (most of an event consumer's CPU on the live stack)."""
    return await session.run_sync(insert_if_absent_in, model, rows)


@functools.cache
def _insert_if_absent(table: Table) -> Prepared[InsertIfAbsent]:
    """Built once per table: a statement built anew costs more than running it."""
    return Prepared(InsertIfAbsent(table))
