"""How fast an outbox relay drains a backlog into Kafka, by producer batch size.

    .venv/bin/python -m benchmarks.relay_drain [--events 1000] [--latency-ms 20] [--rounds 3]

Starts Kafka behind Toxiproxy (the default topology's topics, nothing else) and adds
``--latency-ms`` on the Kafka proxy in each direction: what a loaded machine does to a
produce round trip (each one waits for Toxiproxy, the broker and the relay's own busy
event loop). Then, alternately, stages ``--events`` events on distinct keys in a SQLite
outbox and times one relay draining them: with aiokafka's default batches (16 KiB per
partition) and with the chassis' ``BATCH_BYTES``. Prints events per second and this
process's CPU per event for each, and their ratios, medians over ``--rounds``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from advanced_alchemy.base import orm_registry
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from harness.faults import Faults
from harness.localstack import events_only_topology, free_port_base, local_stack
from harness.target import local_target
from system.chassis.db import create_engine
from system.chassis.outbox import (
    BATCH_BYTES,
    OutboxMessage,
    OutboxRelay,
    kafka_producer_factory,
    stage,
)
from system.chassis.settings import ServiceSettings
from system.events import OrderItem, OrderPlacedV1, new_event
from system.runtime.paths import StackPaths
from system.runtime.state import StackSettings

AIOKAFKA_DEFAULT = 16 * 1024
_ITEMS = [OrderItem(product_id="p-1", quantity=1, unit_price_cents=999)]


async def _stage(maker: async_sessionmaker[AsyncSession], events: int, round_: int) -> None:
    async with maker() as session, session.begin():
        for n in range(events):
            order = f"r{round_}-o{n}"
            await stage(
                session,
                new_event(
                    OrderPlacedV1(order_id=order, user_id="u", items=_ITEMS, total_cents=999)
                ),
            )


async def _pending(maker: async_sessionmaker[AsyncSession]) -> int:
    async with maker() as session:
        query = select(func.count()).where(OutboxMessage.published_at.is_(None))
        return int(await session.scalar(query) or 0)


async def _drain(
    maker: async_sessionmaker[AsyncSession], bootstrap: str, batch_bytes: int, events: int
) -> tuple[float, float]:
    """Seconds and CPU seconds for one relay to publish the backlog."""
    relay = OutboxRelay(
        maker,
        kafka_producer_factory(bootstrap, max_batch_size=batch_bytes),
        registry=CollectorRegistry(),
    )
    wall, cpu = time.perf_counter(), time.process_time()
    await relay.start()
    deadline = time.monotonic() + 300
    while await _pending(maker):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{events} events not drained in 300 s")
        await asyncio.sleep(0.01)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    await relay.stop()
    return wall, cpu


async def measure(bootstrap: str, folder: Path, events: int, rounds: int) -> dict[int, Any]:
    engine = create_engine(ServiceSettings(name="relay-drain", data_dir=folder))
    async with engine.begin() as conn:
        await conn.run_sync(orm_registry.metadata.create_all)
    maker = async_sessionmaker(engine, expire_on_commit=False)
    results: dict[int, list[tuple[float, float]]] = {AIOKAFKA_DEFAULT: [], BATCH_BYTES: []}
    try:
        for round_ in range(rounds):
            for batch_bytes, runs in results.items():
                await _stage(maker, events, round_ * 2 + len(runs))
                runs.append(await _drain(maker, bootstrap, batch_bytes, events))
                print(
                    f"  round {round_ + 1}, {batch_bytes // 1024:>3} KiB batches: "
                    f"{events / runs[-1][0]:7.0f} events/s",
                    flush=True,
                )
    finally:
        await engine.dispose()
    return {
        size: (
            statistics.median(events / wall for wall, _ in runs),
            statistics.median(cpu / events * 1e6 for _, cpu in runs),
        )
        for size, runs in results.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.events < 1 or args.rounds < 1 or args.latency_ms < 0:
        parser.error("--events and --rounds must be at least 1, --latency-ms at least 0")
    with tempfile.TemporaryDirectory(prefix="bench-relay-") as home_name:
        home = Path(home_name)
        topology = events_only_topology(home)
        settings = StackSettings(
            name="relay", topology_file=str(topology), without=("envoy", "prometheus", "jaeger")
        )
        settings = StackSettings(**{**settings.__dict__, "port_base": free_port_base(settings)})
        paths = StackPaths.for_stack("relay", home / "harness-home")
        with local_stack(paths, settings) as state:
            bootstrap = f"127.0.0.1:{state['ports']['kafka']}"
            faults = Faults.for_target(local_target(paths, state))
            print(
                f"{args.events} events per drain, Kafka {args.latency_ms} ms away each way "
                f"(Toxiproxy), {args.rounds} rounds",
                flush=True,
            )
            try:
                with (
                    faults.tcp_toxic(
                        "kafka", "latency", stream="downstream", latency=args.latency_ms
                    ),
                    faults.tcp_toxic(
                        "kafka", "latency", stream="upstream", latency=args.latency_ms
                    ),
                ):
                    figures = asyncio.run(
                        measure(bootstrap, home / "data", args.events, args.rounds)
                    )
            finally:
                faults.close()
    for label, size in (("aiokafka's default", AIOKAFKA_DEFAULT), ("BATCH_BYTES", BATCH_BYTES)):
        rate, cpu = figures[size]
        print(f"{label:>18} ({size // 1024:>3} KiB): {rate:6.0f} events/s, {cpu:4.0f} µs CPU/event")
    (base_rate, base_cpu), (rate, cpu) = figures[AIOKAFKA_DEFAULT], figures[BATCH_BYTES]
    print(f"ratio: {rate / base_rate:.2f}x the rate, {cpu / base_cpu:.2f}x the CPU per event")


if __name__ == "__main__":
    main()
