"""CPU per order through the saga, in-process: where an order's time goes.

    .venv/bin/python -m benchmarks.order_cpu [--orders 200] [--concurrency 50] [--aiosqlite]
                                             [--traced 0.01] [--profile]

Runs users, products, payments and orders on temporary SQLite files in one process, the
mesh replaced by ASGI transports (``harness.inprocess``, as the saga's unit tests; no
network, no Kafka, no span export), places ``--orders`` orders (``--concurrency`` at a
time) and waits until every saga is finished. Prints CPU and wall milliseconds per order
SQL statements and commits per order; ``--aiosqlite`` runs SQLite on aiosqlite's thread instead
of inline (``<SERVICE>_SQLITE_INLINE=false``), ``--profile`` adds the top of a cProfile.
``--traced`` is the share of orders placed in a sampled trace, as the gateway decides it
(1% by default on the stack): the others carry an unsampled ``traceparent``. Until the
eleventh session every order here was traced (no ``traceparent``: each request started a
sampled trace), which also sent every statement down SQLAlchemy's path
(``system.chassis.prepared``); ``--traced 1`` measures that.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import random
import tempfile
import time
import weakref
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import greenlet
import httpx
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.engine.interfaces import CacheStats

from harness.inprocess import InProcessSystem, build_system, deliver, running
from system.chassis.keys import key_id
from system.services.users.security import TokenIssuer


class Counter:
    """SQL statements, the ones compiled anew (no cache key: SQLAlchemy cannot cache
    them), commits on every engine in the process, and greenlets started (SQLAlchemy's
    async layer starts one per awaited call: ~10 µs each here, a frame stack chunk
    mapped and unmapped)."""

    def __init__(self) -> None:
        self.statements = self.commits = self.uncached = self.greenlets = 0
        self._seen: weakref.WeakSet[greenlet.greenlet] = weakref.WeakSet()
        event.listen(Engine, "before_cursor_execute", self._statement)
        event.listen(Engine, "commit", self._commit)
        greenlet.settrace(self._switch)

    def reset(self) -> None:
        self.statements = self.commits = self.uncached = self.greenlets = 0

    def _switch(self, kind: str, args: tuple[greenlet.greenlet, greenlet.greenlet]) -> None:
        target = args[1]
        if kind == "switch" and target not in self._seen:
            self._seen.add(target)
            self.greenlets += 1

    def _statement(
        self, _conn: Any, _cursor: Any, _sql: str, _params: Any, context: Any, *_: Any
    ) -> None:
        self.statements += 1
        if context is not None and context.cache_hit is CacheStats.NO_CACHE_KEY:
            self.uncached += 1

    def _commit(self, *_: Any) -> None:
        self.commits += 1


def world(folder: Path, inline: bool) -> tuple[InProcessSystem, dict[str, str]]:
    """users, products, payments and orders on ``folder``; a token per role."""
    system = build_system(
        folder,
        only=("users", "products", "payments", "orders"),
        common={"log_level": "WARNING", "sqlite_inline": inline},
    )
    issuer = TokenIssuer(
        system.keys.private.read_bytes(),
        key_id(system.keys.public.read_bytes()),
        "microharness-users",
        "microharness",
        timedelta(hours=1),
    )
    tokens = {
        role: f"Bearer {issuer.issue(user_id=role, role=role, email=f'{role}@x.test')}"
        for role in ("admin", "customer")
    }
    return system, tokens


def traceparent(i: int, traced: float) -> str:
    """The W3C context the gateway would pass: sampled for one order in ``1/traced``."""
    sampled = traced > 0 and i % max(1, round(1 / traced)) == 0
    return f"00-{random.getrandbits(128):032x}-{random.getrandbits(64):016x}-0{int(sampled)}"


async def run(orders: int, concurrency: int, inline: bool, profile: bool, traced: float) -> None:
    counter = Counter()
    with tempfile.TemporaryDirectory(prefix="bench-order-") as name:
        system, tokens = world(Path(name), inline)
        orders_app = system.apps["orders"]
        async with running(system), AsyncExitStack() as stack:
            http = await stack.enter_async_context(
                httpx.AsyncClient(transport=system.meshes["orders"])
            )
            created = await http.post(
                "http://products/",
                headers={"Authorization": tokens["admin"]},
                json={"sku": "BENCH-1", "name": "lamp", "price_cents": 5, "initial_stock": 10**6},
            )
            pid = created.json()["id"]
            # its price reaches orders' copy of the catalog, as Kafka would bring it
            assert await deliver(system, "products", "products.catalog", to="orders") == 1
            o_http = await stack.enter_async_context(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=orders_app), base_url="http://o"
                )
            )
            gate = asyncio.Semaphore(concurrency)

            async def place(i: int) -> None:
                async with gate:
                    answer = await o_http.post(
                        "/",
                        json={
                            "items": [{"product_id": pid, "quantity": 1}],
                            "card_token": "tok_visa_4242",
                        },
                        headers={
                            "Authorization": tokens["customer"],
                            "Idempotency-Key": f"bench-{i:08d}",
                            "traceparent": traceparent(i, traced),
                        },
                    )
                    assert answer.status_code == 202, answer.text

            async def batch(first: int, n: int) -> None:
                await asyncio.gather(*(place(i) for i in range(first, first + n)))
                await orders_app.state.saga.idle()

            await batch(0, 20)  # warm-up
            counter.reset()
            profiler = cProfile.Profile() if profile else None
            wall, cpu = time.perf_counter(), time.process_time()
            if profiler:
                profiler.enable()
            await batch(20, orders)
            if profiler:
                profiler.disable()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    driver = "inline" if inline else "aiosqlite"
    print(
        f"{orders} orders, {concurrency} at a time, {traced:.0%} traced, SQLite {driver}: "
        f"cpu {cpu / orders * 1000:.1f} ms/order  wall {wall / orders * 1000:.1f} ms/order  "
        f"{counter.statements / orders:.0f} SQL statements "
        f"({counter.uncached / orders:.1f} uncacheable) and "
        f"{counter.commits / orders:.1f} commits/order, "
        f"{counter.greenlets / orders:.1f} greenlets/order"
    )
    if profiler:
        pstats.Stats(profiler).sort_stats(os.environ.get("SORT", "cumulative")).print_stats(40)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--aiosqlite", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--traced", type=float, default=0.01, help="share of orders traced")
    args = parser.parse_args()
    if not 0 <= args.traced <= 1:
        parser.error("--traced is a share between 0 and 1")
    asyncio.run(run(args.orders, args.concurrency, not args.aiosqlite, args.profile, args.traced))


if __name__ == "__main__":
    main()
