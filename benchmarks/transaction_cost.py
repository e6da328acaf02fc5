"""CPU per short write transaction: how the chassis opens one, against the floor.

    .venv/bin/python -m benchmarks.transaction_cost [--transactions 3000] [--rounds 5]

Runs a one-statement transaction (the read model's ``UPDATE`` of the orders service, by
order id) on a temporary SQLite file through the chassis' writer engine, three ways, the
rounds interleaved so that the machine's drift hits all three alike:

* ``AsyncSession`` + ``run_sync``: ``async with maker() as session`` and the work in one
  ``run_sync`` (how ``system.chassis.db.in_transaction`` did it until the eighth session);
* synchronous ``Session`` in one greenlet: opened, used, committed and closed in it (how
  ``in_transaction`` did it in the eighth session);
* ``in_transaction``: the statement run by ``Connection.execute`` (SQLAlchemy's path: a
  Core ``Connection`` made over the pooled connection, used, committed and returned in
  one greenlet);
* ``Connection + Prepared``: a ``Prepared`` statement (the chassis' hot statements) in a
  Core ``Connection`` and its ``Transaction``, on the chassis' reused greenlet: how
  ``in_transaction`` ran it until the fifteenth session;
* ``in_transaction + Prepared``: what the chassis does now on SQLite (no ``Connection``:
  ``system.chassis.inline_transaction``);
* ``sqlite3``: the same statement, ``BEGIN`` and ``COMMIT`` on a bare :mod:`sqlite3`
  connection to the same file, no SQLAlchemy: the floor.

Prints the median CPU per transaction of each and its ratio to the first.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, bindparam, insert, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session
from sqlalchemy.util import greenlet_spawn

from system.chassis import greenlets, sqlite_inline
from system.chassis.db import Executor, create_engine, in_transaction, table_of
from system.chassis.prepared import Prepared
from system.chassis.settings import ServiceSettings
from system.services.orders.models import OrderView

VIEWS = table_of(OrderView)
SET_STATUS = update(VIEWS).where(VIEWS.c.order_id == bindparam("the_order"))
PREPARED_SET_STATUS = Prepared(SET_STATUS)
RAW_SET_STATUS = "UPDATE order_view SET status = ?, version = ? WHERE order_id = ?"
ROWS = 100


def set_status(session: Executor, i: int) -> None:
    session.execute(SET_STATUS, {"the_order": f"o{i % ROWS}", "status": "RESERVED", "version": i})


def set_status_prepared(session: Executor, i: int) -> None:
    PREPARED_SET_STATUS(session, {"the_order": f"o{i % ROWS}", "status": "RESERVED", "version": i})


def in_connection(engine: Engine, i: int) -> None:
    """``in_transaction`` until the fifteenth session, its ``after_commit`` bookkeeping
    included."""
    sqlite_inline.results_in_place()
    with engine.connect() as connection:
        connection.info.pop("after_commit", None)  # the callbacks' key (any key costs alike)
        try:
            with connection.begin():
                set_status_prepared(connection, i)
        finally:
            connection.info.pop("after_commit", None)


async def run(transactions: int, rounds: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-transaction-") as folder:
        settings = ServiceSettings(name="bench", data_dir=Path(folder))
        engine = create_engine(settings)
        async with engine.begin() as conn:
            await conn.run_sync(OrderView.metadata.create_all)
            placed = datetime.now(UTC)
            await conn.execute(
                insert(VIEWS),
                [
                    {
                        "order_id": f"o{i}",
                        "user_id": "u",
                        "status": "PLACED",
                        "total_cents": 5,
                        "items": [],
                        "version": 0,
                        "placed_at": placed,
                        "updated_at": placed,
                    }
                    for i in range(ROWS)
                ],
            )
        maker = async_sessionmaker(engine, expire_on_commit=False)
        raw = sqlite3.connect(Path(folder) / "bench.db", isolation_level=None)
        raw.execute("PRAGMA journal_mode=WAL")
        raw.execute("PRAGMA synchronous=NORMAL")

        async def with_async_session(i: int) -> None:
            async with maker() as session:
                await session.run_sync(lambda s: _committed(s, i))

        def in_one_session(i: int) -> None:
            with _sync_session(maker) as session, session.begin():
                set_status(session, i)

        async def with_sync_session(i: int) -> None:
            await greenlet_spawn(in_one_session, i)

        async def with_in_transaction(i: int) -> None:
            await in_transaction(maker, set_status, i)

        async def with_connection_prepared(i: int) -> None:
            await greenlets.spawn(in_connection, engine.sync_engine, i)

        async def with_in_transaction_prepared(i: int) -> None:
            await in_transaction(maker, set_status_prepared, i)

        async def with_sqlite3(i: int) -> None:
            raw.execute("BEGIN")
            raw.execute(RAW_SET_STATUS, ("RESERVED", i, f"o{i % ROWS}"))
            raw.execute("COMMIT")

        ways: dict[str, Callable[[int], Awaitable[None]]] = {
            "AsyncSession + run_sync": with_async_session,
            "Session in one greenlet": with_sync_session,
            "in_transaction": with_in_transaction,
            "Connection + Prepared": with_connection_prepared,
            "in_transaction + Prepared": with_in_transaction_prepared,
            "sqlite3 (floor)": with_sqlite3,
        }
        spent: dict[str, list[float]] = {name: [] for name in ways}
        for way in ways.values():  # warm-up: statement caches, pool, page cache
            for i in range(200):
                await way(i)
        for _ in range(rounds):
            for name, way in ways.items():
                began = time.process_time()
                for i in range(transactions):
                    await way(i)
                spent[name].append((time.process_time() - began) / transactions * 1e6)
        raw.close()
        await engine.dispose()
    return {name: statistics.median(samples) for name, samples in spent.items()}


def _sync_session(maker: async_sessionmaker[AsyncSession]) -> Session:
    """The synchronous ``Session`` an ``AsyncSession`` of ``maker`` would wrap."""
    options = dict(maker.kw)
    engine = options.pop("bind")
    return Session(bind=engine.sync_engine, **options)


def _committed(session: Session, i: int) -> Any:
    with session.begin():
        set_status(session, i)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    found = asyncio.run(run(args.transactions, args.rounds))
    print(
        f"{args.transactions} one-statement transactions per round, median of "
        f"{args.rounds} interleaved rounds (SQLite, the chassis' writer engine)"
    )
    baseline = next(iter(found.values()))
    for name, micros in found.items():
        print(f"  {name:26s} {micros:6.0f} µs CPU per transaction   x{micros / baseline:.2f}")


if __name__ == "__main__":
    main()
