"""A transaction on the inline SQLite driver without SQLAlchemy's ``Connection``.

:func:`system.chassis.db.in_transaction` on SQLite (``system.chassis.sqlite_inline``)
checks a connection out of the pool, hands ``work`` an :class:`InlineConnection` over
it, commits the DBAPI connection itself and checks it back in. A ``Connection`` (its
construction joins the engine's event dispatch), its ``Transaction`` and SQLAlchemy's
commit and close paths were a quarter to a third of a one-statement transaction's CPU
here: 77-109 → 47-76 µs (one :class:`~system.chassis.prepared.Prepared` ``UPDATE``;
``benchmarks/transaction_cost.py`` prints both ways), on the order path's six to eight
transactions per order.

What ``work`` gets behaves as a ``Connection`` for what the chassis' statement functions
use: :class:`~system.chassis.prepared.Prepared` statements run on its DBAPI connection
(their cursor listeners are called with it), ``info`` (:func:`~system.chassis.db.after_commit`)
and ``in_transaction()``. ``execute``, ``scalars`` and ``scalar`` (a statement that is
not ``Prepared``, or one that takes SQLAlchemy's path: a sampled trace's statements) make
a real ``Connection`` over the same DBAPI connection the first time, and the transaction
then ends through it, as before. Any other ``Connection`` attribute raises
``AttributeError``: use the ORM session (``AsyncSession.run_sync``) for more.

SQLite's transaction is the DBAPI's own either way: SQLAlchemy emits no ``BEGIN`` on
SQLite (``sqlite3`` begins before the first write), and its commit and rollback are the
DBAPI connection's. The engine's ``commit`` and ``rollback`` listeners are still called,
with the :class:`InlineConnection` as their connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, exc

T = TypeVar("T")


class InlineConnection:
    """What ``work`` runs on: a checked-out DBAPI connection, in a transaction."""

    __slots__ = ("_core", "connection", "dialect", "engine")

    _has_events = False
    """No listeners of its own (the engine's are in :attr:`dispatch`)."""

    def __init__(self, engine: Engine, fairy: Any) -> None:
        self.engine = engine
        self.dialect = engine.dialect
        self.connection = fairy
        """The pool's proxied DBAPI connection, as ``Connection.connection``."""
        self._core: Connection | None = None

    def in_transaction(self) -> bool:
        return True

    @property
    def info(self) -> dict[Any, Any]:
        """The pooled connection's ``info``, as ``Connection.info``."""
        info: dict[Any, Any] = self.connection.info
        return info

    @property
    def dispatch(self) -> Any:
        """The engine's listeners (a ``Connection``'s join the engine's and its own)."""
        return self.engine.dispatch

    @property
    def core(self) -> Connection | None:
        """The ``Connection`` made for SQLAlchemy's path, if one was needed."""
        return self._core

    def _connection(self) -> Connection:
        if self._core is None:
            self._core = Connection(self.engine, connection=self.connection)
        return self._core

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        return self._connection().execute(*args, **kwargs)

    def scalars(self, *args: Any, **kwargs: Any) -> Any:
        return self._connection().scalars(*args, **kwargs)

    def scalar(self, *args: Any, **kwargs: Any) -> Any:
        return self._connection().scalar(*args, **kwargs)

    def invalidate(self, exception: BaseException | None = None) -> None:
        self._connection().invalidate(exception)


def _end(conn: InlineConnection, *, commit: bool) -> None:
    """Commit or roll back on the DBAPI connection, as ``Connection`` does: listeners
    first, DBAPI errors wrapped as SQLAlchemy's."""
    engine = conn.engine
    if engine._has_events:
        (engine.dispatch.commit if commit else engine.dispatch.rollback)(conn)
    dbapi_connection = conn.connection.dbapi_connection
    try:
        if commit:
            dbapi_connection.commit()
        else:
            dbapi_connection.rollback()
    except Exception as error:
        dbapi = engine.dialect.loaded_dbapi
        if not isinstance(error, dbapi.Error):
            raise
        raise exc.DBAPIError.instance(
            "COMMIT" if commit else "ROLLBACK", None, error, dbapi.Error, dialect=engine.dialect
        ) from error


def run(
    engine: Engine, collected: str, work: Callable[..., T], *args: Any, **kwargs: Any
) -> tuple[T, Any]:
    """``work(conn, *args, **kwargs)`` in a transaction, committed when it returns and
    rolled back if it raises, in the calling greenlet (:func:`system.chassis.db.in_transaction`'s).
    Returns its result and what it left in the connection's ``info`` under ``collected``
    (dropped before ``work`` runs, and after the transaction ends either way)."""
    fairy = engine.raw_connection()
    conn = InlineConnection(engine, fairy)
    info = conn.info
    info.pop(collected, None)  # left by a transaction that used the connection elsewhere
    try:
        try:
            result = work(conn, *args, **kwargs)
        except BaseException:
            _finish(conn, commit=False)
            raise
        _finish(conn, commit=True)
    finally:
        left = info.pop(collected, None)  # returned only after a commit
        core = conn.core
        if core is not None:
            core.close()  # returns the DBAPI connection to the pool
        else:
            fairy.close()
    return result, left


def _finish(conn: InlineConnection, *, commit: bool) -> None:
    core = conn.core
    if core is None or not core.in_transaction():
        _end(conn, commit=commit)
    elif commit:  # SQLAlchemy's path began it: it ends there
        core.commit()
    else:
        core.rollback()
