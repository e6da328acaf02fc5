"""CPU per event through a consumer's batch path: the inbox and analytics' projection.

    .venv/bin/python -m benchmarks.inbox_batch [--events 6000] [--batch 40] [--rounds 5]

In-process, on a temporary SQLite file (no Kafka: the records are built here, as a fetch
would return them). Feeds analytics' handlers (``system.services.analytics.consumers``,
the consumer of every event of the stack) ``--events`` events of an order's six kinds,
``--batch`` at a time through ``EventConsumer.process_batch``, then the same events
again (every one a duplicate, as a redelivery after a rebalance brings them). Prints the
process's CPU per event for fresh and for duplicate events, medians over ``--rounds``
(a new database each round).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from advanced_alchemy.base import orm_registry
from sqlalchemy.ext.asyncio import async_sessionmaker

from harness.inprocess import inbox_consumer, record_of
from system.chassis.db import create_engine
from system.chassis.inbox import Outcome
from system.events import (
    Event,
    OrderConfirmedV1,
    OrderItem,
    OrderPlacedV1,
    PaymentAuthorizedV1,
    PaymentCapturedV1,
    StockCommittedV1,
    StockItem,
    StockReservedV1,
    new_event,
)
from system.services.analytics import models  # noqa: F401 - its tables, for create_all
from system.services.analytics.settings import AnalyticsSettings

_ITEMS = [OrderItem(product_id="p-1", quantity=1, unit_price_cents=999)]
_STOCK = [StockItem(product_id="p-1", quantity=1)]


def _order_events(n: int) -> list[Event[Any]]:
    order, payment = f"o-{n}", str(uuid.uuid4())
    return [
        new_event(OrderPlacedV1(order_id=order, user_id="u", items=_ITEMS, total_cents=999)),
        new_event(StockReservedV1(order_id=order, items=_STOCK)),
        new_event(PaymentAuthorizedV1(payment_id=payment, order_id=order, amount_cents=999)),
        new_event(
            OrderConfirmedV1(
                order_id=order, user_id="u", items=_ITEMS, total_cents=999, payment_id=payment
            )
        ),
        new_event(PaymentCapturedV1(payment_id=payment, order_id=order, amount_cents=999)),
        new_event(StockCommittedV1(order_id=order, items=_STOCK)),
    ]


async def _round(events: int, batch: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as folder:
        engine = create_engine(AnalyticsSettings(data_dir=Path(folder)))
        async with engine.begin() as conn:
            await conn.run_sync(orm_registry.metadata.create_all)
        consumer = inbox_consumer("analytics", async_sessionmaker(engine, expire_on_commit=False))
        records = [record_of(e) for n in range(events // 6) for e in _order_events(n)]
        timings = []
        for expected in (Outcome.PROCESSED, Outcome.DUPLICATE):
            began = time.process_time()
            for start in range(0, len(records), batch):
                outcomes = await consumer.process_batch(records[start : start + batch])
                if set(outcomes) != {expected}:
                    raise SystemExit(f"expected only {expected}, got {set(outcomes)}")
            timings.append((time.process_time() - began) / len(records) * 1e6)
        await engine.dispose()
        return timings[0], timings[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    fresh, duplicate = [], []
    for _ in range(args.rounds):
        a, b = asyncio.run(_round(args.events, args.batch))
        fresh.append(a)
        duplicate.append(b)
    print(
        f"{args.events} events, {args.batch} a batch, median of {args.rounds} rounds: "
        f"{statistics.median(fresh):.1f} µs of CPU per fresh event, "
        f"{statistics.median(duplicate):.1f} µs per duplicate"
    )


if __name__ == "__main__":
    main()
