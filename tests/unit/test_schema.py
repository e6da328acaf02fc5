"""The services' tables carry no index that another one already provides.

Every index is written on every insert and on every update of its columns, in the
transaction that makes them (on SQLite, each changed index page is one more WAL frame
at commit). An index whose columns lead another index of the same table answers no
query that the other cannot, so it only costs: ``order_event.order_id`` beside the
unique ``(order_id, version)`` was one.
"""

from __future__ import annotations

import importlib
import pkgutil

from advanced_alchemy.base import orm_registry
from sqlalchemy import (
    Column,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
)

import system.services
from system.chassis import inbox, outbox  # noqa: F401  (their tables)


def _load_every_model() -> None:
    """Every service's tables (each service package has a ``models`` module)."""
    for service in pkgutil.iter_modules(system.services.__path__):
        if service.ispkg:
            importlib.import_module(f"system.services.{service.name}.models")


def _is_partial(index: Index) -> bool:
    return any(options.get("where") is not None for options in index.dialect_options.values())


def _orderings(table: Table) -> list[tuple[str, tuple[str, ...], bool, bool]]:
    """(name, columns, unique, partial) of every b-tree the table's rows are kept in."""
    found = []
    for constraint in table.constraints:
        if isinstance(constraint, PrimaryKeyConstraint | UniqueConstraint) and constraint.columns:
            name = str(constraint.name or type(constraint).__name__)
            found.append((name, tuple(c.name for c in constraint.columns), True, False))
    for index in table.indexes:
        columns = tuple(c.name for c in index.columns)
        found.append((str(index.name), columns, bool(index.unique), _is_partial(index)))
    return found


def redundant_indexes(table: Table) -> list[str]:
    """Indexes (not unique, not partial) whose columns lead another full b-tree's."""
    orderings = _orderings(table)
    redundant = []
    for name, columns, unique, partial in orderings:
        if unique or partial:
            continue
        covering = [
            other
            for other, more, _, other_partial in orderings
            if other != name and not other_partial and more[: len(columns)] == columns
        ]
        if covering:
            redundant.append(f"{table.name}.{name} {columns} is led by {covering}")
    return redundant


def test_no_table_has_an_index_that_another_one_already_provides() -> None:
    _load_every_model()
    tables = orm_registry.metadata.sorted_tables
    assert {"order_event", "reservation_line", "payment", "outbox", "inbox"} <= {
        t.name for t in tables
    }
    found = [problem for table in tables for problem in redundant_indexes(table)]
    assert not found, found


def test_the_check_finds_an_index_led_by_a_unique_constraint() -> None:
    table = Table(
        "t",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("a", String, index=True),
        Column("b", Integer),
        Column("c", String, index=True, unique=True),
        UniqueConstraint("a", "b"),
    )
    assert redundant_indexes(table) == ["t.ix_t_a ('a',) is led by ['UniqueConstraint']"]
