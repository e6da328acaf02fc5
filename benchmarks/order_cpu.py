"""CPU per order through the saga, in-process: where an order's time goes.

    .venv/bin/python -m benchmarks.order_cpu [--orders 200] [--concurrency 50] [--aiosqlite]
                                             [--profile]

Runs users, products, payments and orders on temporary SQLite files in one process, the
mesh replaced by ASGI transports (as ``tests/unit/services/test_orders.py`` wires them; no
network, no Kafka, no span export), places ``--orders`` orders (``--concurrency`` at a
time) and waits until every saga is finished. Prints CPU and wall milliseconds per order
SQL statements and commits per order; ``--aiosqlite`` runs SQLite on aiosqlite's thread instead
of inline (``<SERVICE>_SQLITE_INLINE=false``), ``--profile`` adds the top of a cProfile.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import secrets
import tempfile
import time
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from litestar import Litestar
from sqlalchemy import event
from sqlalchemy.engine import Engine

from system.chassis.inprocess import InProcessMesh, mesh_urls
from system.chassis.keys import KeyFiles, key_id
from system.services.orders.app import build as build_orders
from system.services.orders.settings import OrdersSettings
from system.services.payments.app import build as build_payments
from system.services.payments.settings import PaymentsSettings
from system.services.products.app import build as build_products
from system.services.products.settings import ProductsSettings
from system.services.users.app import build as build_users
from system.services.users.security import TokenIssuer
from system.services.users.settings import UsersSettings


class Counter:
    """SQL statements and commits on every engine in the process."""

    def __init__(self) -> None:
        self.statements = self.commits = 0
        event.listen(Engine, "before_cursor_execute", self._statement)
        event.listen(Engine, "commit", self._commit)

    def _statement(self, *_: Any) -> None:
        self.statements += 1

    def _commit(self, *_: Any) -> None:
        self.commits += 1


def world(folder: Path, inline: bool) -> tuple[list[Litestar], InProcessMesh, dict[str, str]]:
    """users, products, payments and orders (last) on ``folder``; the mesh; a token per role."""
    keys = KeyFiles(folder / "jwt").ensure()
    issuer = TokenIssuer(
        keys.private.read_bytes(),
        key_id(keys.public.read_bytes()),
        "microharness-users",
        "microharness",
        timedelta(hours=1),
    )
    clients = folder / "clients.json"
    secret = secrets.token_hex(16)
    clients.write_text(json.dumps({"orders": secret}))
    common: dict[str, Any] = {
        "log_json": False,
        "log_level": "WARNING",
        "jwt_public_key_file": keys.public,
        "sqlite_inline": inline,
    }
    users = build_users(
        UsersSettings(
            data_dir=folder / "users",
            service_clients_file=clients,
            jwt_private_key_file=keys.private,
            **common,
        )
    )
    products = build_products(ProductsSettings(data_dir=folder / "products", **common))
    payments = build_payments(PaymentsSettings(data_dir=folder / "payments", **common))
    mesh = InProcessMesh({"users": users, "products": products, "payments": payments})
    orders = build_orders(
        OrdersSettings(
            data_dir=folder / "orders",
            client_secret=secret,
            mesh=mesh_urls("users", "products", "payments"),
            **common,
        ),
        mesh_transport=mesh,
    )
    tokens = {
        role: f"Bearer {issuer.issue(user_id=role, role=role, email=f'{role}@x.test')}"
        for role in ("admin", "customer")
    }
    return [users, products, payments, orders], mesh, tokens


async def run(orders: int, concurrency: int, inline: bool, profile: bool) -> None:
    counter = Counter()
    with tempfile.TemporaryDirectory(prefix="bench-order-") as name:
        apps, mesh, tokens = world(Path(name), inline)
        orders_app = apps[-1]
        async with AsyncExitStack() as stack:
            for app in apps:
                await stack.enter_async_context(app.lifespan())
            http = await stack.enter_async_context(httpx.AsyncClient(transport=mesh))
            created = await http.post(
                "http://products/",
                headers={"Authorization": tokens["admin"]},
                json={"sku": "BENCH-1", "name": "lamp", "price_cents": 5, "initial_stock": 10**6},
            )
            pid = created.json()["id"]
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
                        },
                    )
                    assert answer.status_code == 202, answer.text

            async def batch(first: int, n: int) -> None:
                await asyncio.gather(*(place(i) for i in range(first, first + n)))
                await orders_app.state.saga.idle()

            await batch(0, 20)  # warm-up
            counter.statements = counter.commits = 0
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
        f"{orders} orders, {concurrency} at a time, SQLite {driver}: "
        f"cpu {cpu / orders * 1000:.1f} ms/order  wall {wall / orders * 1000:.1f} ms/order  "
        f"{counter.statements / orders:.0f} SQL statements and "
        f"{counter.commits / orders:.1f} commits/order"
    )
    if profiler:
        pstats.Stats(profiler).sort_stats(os.environ.get("SORT", "cumulative")).print_stats(40)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--aiosqlite", action="store_true")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    asyncio.run(run(args.orders, args.concurrency, not args.aiosqlite, args.profile))


if __name__ == "__main__":
    main()
