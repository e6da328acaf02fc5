"""Hot statements compiled once and run on the driver's cursor.

``Connection.execute`` builds an execution context for every statement: the compiled
cache looked up, the parameters constructed and processed, event hooks, a
``CursorResult`` with its metadata. On the order path that was the biggest single part
of the services' CPU (py-spy at 150 orders/s: 13-16% of orders, payments and products,
inside ``Connection.execute`` alone). In-process (``benchmarks/order_cpu.py``, 1% of
orders traced, as on the stack) this path took an order from 4.4-4.7 to 3.6 ms of CPU.

A :class:`Prepared` statement (module level, built once) is compiled once per dialect
and set of parameter names, the way ``Connection.execute`` compiles it, and then run as
``cursor.execute(sql, parameters)`` on the connection's DBAPI cursor, with the same bind
and result processing (the types' own processors) and the same Python-side column
defaults. Calling it returns :class:`Rows` whichever path ran. On the inline SQLite
driver (``system.chassis.sqlite_inline``) the cursor is :mod:`sqlite3`'s own, not the
driver adapter's (a cursor object, a close and four result hand-offs fewer per
statement); a statement refused because another connection holds the lock is run again
on the adapter's cursor, which waits for the lock asynchronously.

On an ORM ``Session`` (``AsyncSession.run_sync``, an event consumer's transaction) it
runs on the session's connection (``Session.connection()``): the statements are Core
statements, which the session would not flush pending objects for either.

It takes SQLAlchemy's own path (``executor.execute``), and gives the same :class:`Rows`:

* outside a begun transaction (a direct statement must not start one behind
  SQLAlchemy's back);
* when a SQL span would be recorded (:func:`system.chassis.sql_spans.recording`), so a
  sampled trace shows every statement, as before;
* for what a plan does not do: expanding (``IN``) or literal-execute parameters, escaped
  parameter names, ``RETURNING`` with several parameter sets, a Python default that
  takes the execution context. Such a statement is planned once and always falls back.

Errors are SQLAlchemy's: a DBAPI error is wrapped as ``Connection.execute`` wraps it
(``IntegrityError``...), and a disconnect invalidates the connection. Cursor event
listeners (``before_cursor_execute``, ``after_cursor_execute``) still see each statement,
with no execution context; the chassis' own SQL spans are not called (they record
nothing outside a sampled operation, where this path is not taken), which saved their
two calls per statement (1.7% of the orders and payments services' samples).

Relies on SQLAlchemy 2.0's compiler (``positiontup``, ``_bind_processors``,
``insert_prefetch``, ``_result_columns``); ``pyproject.toml`` pins ``<2.1``.
"""

from __future__ import annotations

import sqlite3
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

from sqlalchemy import exc
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import UpdateBase

from system.chassis import sql_spans, sqlite_inline

S = TypeVar("S", bound=UpdateBase | Select[Any])
Params = Mapping[str, Any] | Sequence[Mapping[str, Any]] | None


class Rows:
    """What a :class:`Prepared` statement returned: its rows (named tuples, or
    SQLAlchemy's ``Row``\\ s on the fallback path; both read by attribute and index) and
    the rows it changed."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def all(self) -> list[Any]:
        return list(self._rows)

    def first(self) -> Any | None:
        return self._rows[0] if self._rows else None

    def one(self) -> Any:
        if not self._rows:
            raise exc.NoResultFound("No row was found when one was required")
        if len(self._rows) > 1:
            raise exc.MultipleResultsFound("Multiple rows were found when exactly one was required")
        return self._rows[0]

    def scalar(self) -> Any | None:
        return self._rows[0][0] if self._rows else None

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalars(self) -> list[Any]:
        return [row[0] for row in self._rows]


@dataclass(frozen=True, slots=True)
class _Plan:
    sql: str
    binds: tuple[tuple[str, Callable[[Any], Any] | None, Any], ...]
    """Per positional parameter: its name, its processor, its value when not given."""
    defaults: tuple[tuple[str, Callable[[], Any]], ...]
    """Python-side column defaults to fill in for parameters not given."""
    positional: bool
    row: type[tuple[Any, ...]] | None
    """The result rows' named tuple (``None`` without rows)."""
    processors: tuple[Callable[[Any], Any] | None, ...]


_MISSING = object()
_PlanKey = tuple[tuple[str, ...], bool]
"""A plan's parameter names (sorted) and whether it runs several parameter sets."""


def _default_of(column: Any, *, update: bool) -> Callable[[], Any] | None:
    """A prefetched column's Python default as a no-argument callable, if it has one."""
    default = column.onupdate if update else column.default
    if default is None:
        return None
    if default.is_scalar:
        value = default.arg
        return lambda: value
    # SQLAlchemy wraps a no-argument function in ``lambda ctx: fn()`` with functools'
    # ``update_wrapper`` (``__wrapped__``); a function that takes the execution context
    # is kept as it is, and needs a context this path does not build
    if default.is_callable and hasattr(default.arg, "__wrapped__"):
        wrapped = default.arg
        return lambda: wrapped(None)
    return None


def _plannable(compiled: SQLCompiler, *, many: bool) -> bool:
    """Whether the plan can run ``compiled`` (else the statement always falls back)."""
    binds = compiled.binds.values()
    return not (
        compiled.escaped_bind_names
        or any(b.expanding or b.literal_execute or b.callable for b in binds)
        or (many and compiled.effective_returning)
        or (compiled.positional and compiled.positiontup is None)
    )


def _defaults(compiled: SQLCompiler) -> list[tuple[str, Callable[[], Any]]] | None:
    """The prefetched columns' Python defaults, or ``None`` if one needs a context."""
    defaults = []
    for columns, update in ((compiled.insert_prefetch, False), (compiled.update_prefetch, True)):
        for column in columns:
            make = _default_of(column, update=update)
            if make is None:
                return None
            defaults.append((column.key, make))
    return defaults


def _result_shape(
    compiled: SQLCompiler, dialect: Dialect
) -> tuple[type[tuple[Any, ...]] | None, tuple[Callable[[Any], Any] | None, ...]] | None:
    """The result rows' named tuple and the columns' processors (``None, ()`` without
    rows; ``None`` if the column names cannot name a tuple's fields)."""
    columns = compiled._result_columns
    if not columns:
        return None, ()
    keys = [entry.keyname for entry in columns]
    if len(set(keys)) != len(keys) or not all(k.isidentifier() for k in keys):
        return None
    row = NamedTuple("Row", [(k, Any) for k in keys])  # type: ignore[misc]
    processors = tuple(entry.type._cached_result_processor(dialect, None) for entry in columns)
    return row, processors


def _plan(compiled: SQLCompiler, dialect: Dialect, *, many: bool) -> _Plan | None:
    defaults = _defaults(compiled) if _plannable(compiled, many=many) else None
    shape = _result_shape(compiled, dialect) if defaults is not None else None
    if defaults is None or shape is None:
        return None
    binds = compiled.binds
    names = compiled.positiontup if compiled.positional else list(binds)
    processors: Mapping[str, Callable[[Any], Any]] = compiled._bind_processors  # type: ignore[assignment]
    return _Plan(
        compiled.string,
        tuple(
            (name, processors.get(name), _MISSING if binds[name].required else binds[name].value)
            for name in names or ()
        ),
        tuple(defaults),
        bool(compiled.positional),
        *shape,
    )


class Prepared(Generic[S]):
    """``statement`` (built once, at module level), run by calling the object:
    ``INSERT_EVENTS(connection, rows)``. See the module docstring."""

    __slots__ = ("__weakref__", "_plans", "statement")

    def __init__(self, statement: S) -> None:
        if any(
            d.get("entity") is not None and d.get("expr") is d.get("entity")
            for d in getattr(statement, "column_descriptions", ())
        ):
            raise TypeError(f"{statement}: select columns, not ORM entities, in a Prepared")
        self.statement = statement
        self._plans: weakref.WeakKeyDictionary[Dialect, dict[_PlanKey, _Plan | None]] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        return f"Prepared({self.statement})"

    def __call__(self, executor: Session | Connection, parameters: Params = None) -> Rows:
        many = not isinstance(parameters, Mapping) and parameters is not None
        if not executor.in_transaction() or sql_spans.recording() or (many and not parameters):
            return self._fallback(executor, parameters)
        connection = executor.connection() if isinstance(executor, Session) else executor
        rows: Sequence[Mapping[str, Any]]
        if isinstance(parameters, Mapping):
            rows = [parameters]
        else:
            rows = parameters if parameters is not None else [{}]
        keys = tuple(sorted(rows[0]))
        if many and any(len(r) != len(keys) or any(k not in r for k in keys) for r in rows[1:]):
            return self._fallback(executor, parameters)
        dialect = connection.dialect
        plans = self._plans.get(dialect)
        if plans is None:
            plans = self._plans[dialect] = {}
        try:
            plan = plans[keys, many]
        except KeyError:
            compiled = self.statement.compile(
                dialect=dialect, column_keys=list(keys), for_executemany=many
            )
            plan = plans[keys, many] = _plan(compiled, dialect, many=many)
        if plan is None:
            return self._fallback(executor, parameters)
        return _run(connection, plan, rows, many=many)

    def _fallback(self, executor: Session | Connection, parameters: Params) -> Rows:
        result = executor.execute(self.statement, parameters)
        rowcount = int(getattr(result, "rowcount", -1))  # a CursorResult's, Core or ORM
        if getattr(result, "returns_rows", True):
            return Rows(list(result.all()), rowcount)
        return Rows([], rowcount)


def _bound(plan: _Plan, row: Mapping[str, Any]) -> Any:
    if plan.defaults:
        filled = dict(row)
        for name, make in plan.defaults:
            if name not in filled:
                filled[name] = make()
        row = filled
    values = []
    for name, process, fixed in plan.binds:
        value = row.get(name, fixed)
        if value is _MISSING:
            raise exc.ArgumentError(f"A value is required for bind parameter {name!r}")
        values.append(value if process is None else process(value))
    if plan.positional:
        return tuple(values)
    return {name: value for (name, _, _), value in zip(plan.binds, values, strict=True)}


def _watched(connection: Connection) -> bool:
    """Whether a cursor listener other than the chassis' SQL spans listens."""
    if connection._has_events:  # listeners on this connection itself
        return True
    engine = connection.engine
    if not engine._has_events:
        return False
    own = sql_spans.listening(engine)
    dispatch = engine.dispatch
    return len(dispatch.before_cursor_execute) > own or len(dispatch.after_cursor_execute) > own


def _execute(cursor: Any, sql: str, params: Any, *, many: bool) -> None:
    if many:
        cursor.executemany(sql, params)
    else:
        cursor.execute(sql, params)


def _run(
    connection: Connection, plan: _Plan, rows: Sequence[Mapping[str, Any]], *, many: bool
) -> Rows:
    params = [_bound(plan, row) for row in rows] if many else _bound(plan, rows[0])
    dbapi_connection = connection.connection.dbapi_connection
    if dbapi_connection is None:
        raise exc.ResourceClosedError("the connection is closed")
    events = _watched(connection)
    direct = sqlite_inline.raw(dbapi_connection)
    cursor: Any = dbapi_connection.cursor() if direct is None else direct.cursor()
    try:
        if events:
            connection.dispatch.before_cursor_execute(
                connection, cursor, plan.sql, params, None, many
            )
        try:
            _execute(cursor, plan.sql, params, many=many)
        except sqlite3.OperationalError as error:
            if direct is None or not sqlite_inline.busy(error):
                raise
            # another connection holds the lock: the adapter's cursor waits for it
            # asynchronously (nothing ran: the statement is whole to run again)
            cursor.close()
            cursor = dbapi_connection.cursor()
            _execute(cursor, plan.sql, params, many=many)
        if events:
            connection.dispatch.after_cursor_execute(
                connection, cursor, plan.sql, params, None, many
            )
        fetched = cursor.fetchall() if plan.row is not None and cursor.description else []
        rowcount = cursor.rowcount
    except Exception as error:
        dbapi = connection.dialect.loaded_dbapi
        if not isinstance(error, dbapi.Error):
            raise
        gone = connection.dialect.is_disconnect(error, dbapi_connection, cursor)
        if gone:
            connection.invalidate(error)
        raise exc.DBAPIError.instance(
            plan.sql,
            params,
            error,
            dbapi.Error,
            dialect=connection.dialect,
            connection_invalidated=gone,
        ) from error
    finally:
        cursor.close()
    if plan.row is None:
        return Rows([], rowcount)
    make, processors = plan.row._make, plan.processors  # type: ignore[attr-defined]
    if any(processors):
        out = [
            make(v if p is None else p(v) for p, v in zip(processors, raw, strict=True))
            for raw in fetched
        ]
    else:
        out = [make(raw) for raw in fetched]
    return Rows(out, rowcount)
