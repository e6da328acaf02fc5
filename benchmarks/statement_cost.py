"""CPU per SQL statement: built per call, against built once with bound parameters.

    .venv/bin/python -m benchmarks.statement_cost [--statements 3000] [--rounds 3]

Runs the read model's ``UPDATE`` of the orders service (eight columns, by order id) on a
temporary SQLite file through an ``AsyncSession``, the way the services do: once built
per call (``update(t).where(...).values(...)``), once as a module-level statement with
``bindparam``\\ s, and the same two ways for a ``DELETE``. The difference is statement
construction and its cache key, which SQLAlchemy computes for every new statement
object; ``orders``, ``payments``, ``products``, the inbox and the outbox relay build the
statements on the order path once.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, delete, insert, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from system.chassis.db import create_engine, table_of
from system.chassis.settings import ServiceSettings
from system.services.orders.models import OrderView

VIEWS = table_of(OrderView)
UPDATE_ONCE = update(VIEWS).where(VIEWS.c.order_id == bindparam("the_order"))
DELETE_ONCE = delete(VIEWS).where(VIEWS.c.order_id == bindparam("the_order"))
ROWS = 100


def values(i: int) -> dict[str, Any]:
    return {
        "user_id": "u",
        "status": "RESERVED",
        "total_cents": 5,
        "items": [{"product_id": "p", "quantity": 1}],
        "reason": None,
        "payment_id": None,
        "version": i,
        "updated_at": datetime.now(UTC),
    }


async def update_built(session: AsyncSession, i: int) -> None:
    order = f"o{i % ROWS}"
    await session.execute(update(VIEWS).where(VIEWS.c.order_id == order).values(**values(i)))


async def update_once(session: AsyncSession, i: int) -> None:
    await session.execute(UPDATE_ONCE, {"the_order": f"o{i % ROWS}", **values(i)})


async def delete_built(session: AsyncSession, i: int) -> None:
    await session.execute(delete(VIEWS).where(VIEWS.c.order_id == f"none-{i}"))


async def delete_once(session: AsyncSession, i: int) -> None:
    await session.execute(DELETE_ONCE, {"the_order": f"none-{i}"})


CASES: dict[str, Callable[[AsyncSession, int], Any]] = {
    "UPDATE built per call": update_built,
    "UPDATE built once": update_once,
    "DELETE built per call": delete_built,
    "DELETE built once": delete_once,
}


async def run(statements: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-statement-") as folder:
        engine = create_engine(ServiceSettings(name="bench", data_dir=Path(folder)))
        async with engine.begin() as conn:
            await conn.run_sync(OrderView.metadata.create_all)
        maker = async_sessionmaker(engine, expire_on_commit=False)
        async with maker() as session, session.begin():
            placed = datetime.now(UTC)
            rows = [{"order_id": f"o{i}", "placed_at": placed, **values(0)} for i in range(ROWS)]
            await session.execute(insert(VIEWS), rows)
        spent: dict[str, list[float]] = {name: [] for name in CASES}
        for _ in range(rounds):
            for name, case in CASES.items():
                async with maker() as session, session.begin():
                    began = time.process_time()
                    for i in range(statements):
                        await case(session, i)
                    spent[name].append((time.process_time() - began) / statements * 1e6)
        await engine.dispose()
    print(f"{statements} statements per round, median of {rounds} rounds (SQLite, inline)")
    for name, samples in spent.items():
        print(f"  {name:24s} {statistics.median(samples):6.0f} µs CPU per statement")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--statements", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(run(args.statements, args.rounds))


if __name__ == "__main__":
    main()
