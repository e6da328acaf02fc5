"""orders with its real collaborators in-process: users (service token), products and
payments behind an ASGI transport in place of the mesh. The saga, compensation, the
event store, the read model and idempotency."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from litestar import Litestar
from sqlalchemy import delete, event, insert, select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Session

from harness.inprocess import InProcessSystem, build_system, deliver, running
from system.chassis.db import create_engine, in_transaction
from system.chassis.inprocess import InProcessMesh
from system.chassis.keys import KeyFiles
from system.chassis.outbox import OutboxMessage
from system.events.schemas import EventPayload, ProductPricedV1, ProductWithdrawnV1, new_event
from system.services.orders.consumers import HANDLERS
from system.services.orders.leases import SagaLeases
from system.services.orders.models import OrderView, SagaLease
from system.services.orders.saga import _ORPHANS, _orphans_in
from system.services.orders.settings import OrdersSettings

SERVICES = ("users", "products", "payments", "orders")


class World:
    def __init__(
        self,
        orders: Litestar,
        products: httpx.AsyncClient,
        orders_http: httpx.AsyncClient,
        mesh: InProcessMesh,
        system: InProcessSystem,
    ) -> None:
        self.orders, self.products, self.http, self.mesh = orders, products, orders_http, mesh
        self.system = system

    async def settle(self) -> None:
        async with asyncio.timeout(20):
            await self.orders.state.saga.idle()

    async def status_of(self, order_id: str, headers: dict[str, str]) -> str:
        status: str = (await self.http.get(f"/{order_id}", headers=headers)).json()["status"]
        return status

    async def place(
        self,
        headers: dict[str, str],
        items: list[dict[str, Any]],
        card: str = "tok_visa_4242",
        key: str = "key-00000001",
    ) -> httpx.Response:
        return await self.http.post(
            "/",
            json={"items": items, "card_token": card},
            headers={**headers, "Idempotency-Key": key},
        )


@asynccontextmanager
async def running_world(tmp_path: Path, keys: KeyFiles) -> AsyncIterator[World]:
    """Lifespans are entered and left in one task (anyio's task groups need that, so this
    is a context manager each test enters, not an async fixture)."""
    system = build_system(
        tmp_path, only=SERVICES, keys=keys, overrides={"orders": {"step_timeout_s": 0.5}}
    )
    orders = system.apps["orders"]
    async with running(system), AsyncExitStack() as stack:
        products_http = await stack.enter_async_context(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=system.apps["products"]), base_url="http://p"
            )
        )
        orders_http = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=orders), base_url="http://o")
        )
        yield World(orders, products_http, orders_http, system.meshes["orders"], system)


async def product(world: World, admin: dict[str, str], stock: int, price: int = 1000) -> str:
    created = await world.products.post(
        "/",
        headers=admin,
        json={
            "sku": f"SKU-{stock}-{price}",
            "name": "thing",
            "price_cents": price,
            "initial_stock": stock,
        },
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def levels(world: World, admin: dict[str, str], pid: str) -> dict[str, int]:
    stock: dict[str, int] = (await world.products.get(f"/{pid}", headers=admin)).json()["stock"]
    return stock


async def tell_orders(world: World, payload: EventPayload) -> None:
    """Deliver a catalog event to orders' handlers, as its consumer would."""
    event = new_event(payload)
    async with world.orders.state.events.session_maker() as session, session.begin():
        await HANDLERS[event.type](session, event)


async def test_orders_prices_from_its_copy_of_the_catalog_and_asks_products_for_the_rest(
    tmp_path: Path, keys: KeyFiles, auth: Callable[..., dict[str, str]]
) -> None:
    async with running_world(tmp_path, keys) as world:
        admin, customer = auth("admin"), auth(user_id="cust-1")
        known, unknown = await product(world, admin, 5, 1250), await product(world, admin, 5, 700)
        await tell_orders(world, ProductPricedV1(product_id=known, price_cents=1100))
        await tell_orders(world, ProductPricedV1(product_id=known, price_cents=900))  # repriced
        world.mesh.down.add(f"products/{known}")  # pricing it by asking would fail
        lines = [{"product_id": known, "quantity": 2}, {"product_id": unknown, "quantity": 1}]
        placed = await world.place(customer, lines)
        assert placed.status_code == 202, placed.text
        assert [i["unit_price_cents"] for i in placed.json()["items"]] == [900, 700]
        assert placed.json()["total_cents"] == 2 * 900 + 700
        await world.settle()
        order = (await world.http.get(f"/{placed.json()['order_id']}", headers=customer)).json()
        assert order["status"] == "CONFIRMED"

        await tell_orders(world, ProductWithdrawnV1(product_id=known))  # forgotten: ask again
        again = await world.place(customer, lines, key="key-00000002")
        assert again.status_code == 503, again.text
        assert again.headers["content-type"] == "application/problem+json"
        world.mesh.down.clear()
        priced = await world.place(customer, lines, key="key-00000003")
        assert [i["unit_price_cents"] for i in priced.json()["items"]] == [1250, 700]
        await world.settle()


async def test_the_catalogs_own_events_reach_orders_copy_once(
    tmp_path: Path, keys: KeyFiles, auth: Callable[..., dict[str, str]]
) -> None:
    async with running_world(tmp_path, keys) as world:
        admin, customer = auth("admin"), auth(user_id="cust-1")
        pid = await product(world, admin, 5, 1250)
        changed = await world.products.patch(f"/{pid}", headers=admin, json={"price_cents": 990})
        assert changed.status_code == 200, changed.text
        system = world.system
        assert await deliver(system, "products", "products.catalog", to="orders") == 2
        assert await deliver(system, "products", "products.catalog", to="orders") == 0  # dupes
        world.mesh.down.add(f"products/{pid}")
        placed = await world.place(customer, [{"product_id": pid, "quantity": 1}])
        assert placed.status_code == 202, placed.text
        assert placed.json()["items"][0]["unit_price_cents"] == 990
        await world.settle()


async def test_an_order_is_confirmed_through_reserve_and_authorize(
    tmp_path: Path, keys: KeyFiles, auth: Callable[..., dict[str, str]]
) -> None:
    async with running_world(tmp_path, keys) as world:
        admin, customer = auth("admin"), auth(user_id="cust-1")
        pid = await product(world, admin, stock=3, price=1250)
        placed = await world.place(customer, [{"product_id": pid, "quantity": 2}])
        assert placed.status_code == 202, placed.text
        order_id = placed.json()["order_id"]
        assert placed.headers["location"] == f"/api/v1/orders/{order_id}"
        assert placed.json()["total_cents"] == 2500
        await world.settle()
        order = (await world.http.get(f"/{order_id}", headers=customer)).json()
        assert order["status"] == "CONFIRMED"
        assert order["payment_id"]
        history = (await world.http.get(f"/{order_id}/history", headers=customer)).json()
        assert [h["type"] for h in history] == [
            "placed",
            "stock_reserved",
            "payment_authorized",
            "confirmed",
        ]
        assert "card_token" not in history[0]["data"]
        assert await levels(world, admin, pid) == {
            "available": 1,
            "reserved": 2,
            "sold": 0,
            "received": 3,
        }
        async with world.orders.state.events.session_maker() as session:
            published = [
                r.event_type
                for r in (
                    await session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))
                ).all()
            ]
        assert published == ["order.placed", "order.confirmed"]


async def test_a_confirmed_order_is_three_appends_and_one_lease_taken_and_dropped(
    tmp_path: Path, keys: KeyFiles, auth: Callable[..., dict[str, str]]
) -> None:
    """The lease is taken in the transaction that places the order and deleted in the one
    that confirms it; confirm (no call) is committed with the authorization before it."""
    async with running_world(tmp_path, keys) as world:
        admin, customer = auth("admin"), auth(user_id="cust-1")
        pid = await product(world, admin, stock=3)
        statements: list[str] = []

        def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            statements.append(" ".join(statement.split()[:3]).lower())

        engine = world.orders.state.events.session_maker.kw["bind"].sync_engine
        event.listen(engine, "before_cursor_execute", seen)
        try:
            placed = await world.place(customer, [{"product_id": pid, "quantity": 1}])
            await world.settle()
        finally:
            event.remove(engine, "before_cursor_execute", seen)
        assert placed.status_code == 202, placed.text
        assert (await world.status_of(placed.json()["order_id"], customer)) == "CONFIRMED"
        assert [s for s in statements if "saga_lease" in s] == [
            "insert into saga_lease",
            "delete from saga_lease",
        ]
        assert [s for s in statements if "order_event" in s] == ["insert into order_event"] * 3


async def test_a_declined_card_releases_the_stock_and_cancels(
    tmp_path: Path, keys: KeyFiles, auth: Callable[..., dict[str, str]]
) -> None:
    async with running_world(tmp_path, keys) as world:
        admin, customer = auth("admin"), auth()
        pid = await product(world, admin, stock=2)
        placed = await world.place(
            customer, [{"product_id": pid, "quantity": 2}], card="tok_decline_0001"
        )
        await world.settle()
        order = (await world.http.get(f"/{placed.json()['order_id']}", headers=customer)).json()
        assert (order["status"], order["reason"]) == ("CANCELLED", "card_declined")
        assert await levels(world, admin, pid) == {
            "available": 2,
            "reserved": 0,
            "sold": 0,
            "received": 2,
        }
        history = (await world.http.get(f"/{order['order_id']}/history", headers=customer)).json()
        assert [h["type"] for h in history] == [
            "placed",
            "stock_reserved",
            "compensation_started",
            "stock_released",
            "payment_voided",
            "cancelled",
        ]


async def test_out_of_stock_cancels_without_touching_payments(
    tmp_path: Path, keys: KeyFiles, auth: Callable[..., dict[str, str]]
) -> None:
    async with running_world(tmp_path, keys) as world:
        admin, customer = auth("admin"), auth()
        pid = await product(world, admin, stock=1)
        placed = await world.place(customer, [{"product_id": pid, "quantity": 2}])
        await world.settle()
        order = (await world.http.get(f"/{placed.json()['order_id']}", headers=customer)).json()
        assert (order["status"], order["reason"]) == ("CANCELLED", "out_of_stock")
        assert order["payment_id"] is None
        assert await levels(world, admin, pid) == {
            "available": 1,
            "reserved": 0,
            "sold": 0,
            "received": 1,
        }


async def test_an_unreachable_payments_edge_ends_in_compensation_not_pending(
    tmp_path: Path, keys: KeyFiles, auth: Callable[..., dict[str, str]]
) -> None:
    async with running_world(tmp_path, keys) as world:
        admin, customer = auth("admin"), auth()
        pid = await product(world, admin, stock=1)
        world.mesh.down.add("payments")
        placed = await world.place(customer, [{"product_id": pid, "quantity": 1}])
        order_id = placed.json()["order_id"]
        async with asyncio.timeout(15):  # the step gives up after step_timeout_s
            while await world.status_of(order_id, customer) != "CANCELLING":  # noqa: ASYNC110 - polling another app with a deadline
                await asyncio.sleep(0.05)
        # compensation cannot finish while payments is away (the void may be needed) ...
        assert await levels(world, admin, pid) == {
            "available": 1,
            "reserved": 0,
            "sold": 0,
            "received": 1,
        }
        world.mesh.down.clear()
        await world.settle()  # ... and finishes once it is back
        order = (await world.http.get(f"/{order_id}", headers=customer)).json()
        assert (order["status"], order["reason"]) == ("CANCELLED", "authorize_timeout")


async def test_an_unreachable_reserve_step_ends_in_compensation_not_pending(
    tmp_path: Path, keys: KeyFiles, auth: Callable[..., dict[str, str]]
) -> None:
    async with running_world(tmp_path, keys) as world:
        admin, customer = auth("admin"), auth()
        pid = await product(world, admin, stock=1)
        world.mesh.down.add("products/reservations")  # the catalog still prices the order
        placed = await world.place(customer, [{"product_id": pid, "quantity": 1}])
        order_id = placed.json()["order_id"]
        async with asyncio.timeout(15):
            while await world.status_of(order_id, customer) != "CANCELLING":  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        world.mesh.down.clear()
        await world.settle()
        order = (await world.http.get(f"/{order_id}", headers=customer)).json()
        assert (order["status"], order["reason"], order["payment_id"]) == (
            "CANCELLED",
            "reserve_timeout",
            None,
        )
        history = (await world.http.get(f"/{order_id}/history", headers=customer)).json()
        assert [h["type"] for h in history] == [
            "placed",
            "compensation_started",
            "stock_released",
            "cancelled",
        ]
        assert await levels(world, admin, pid) == {
            "available": 1,
            "reserved": 0,
            "sold": 0,
            "received": 1,
        }


async def test_the_same_idempotency_key_gives_the_same_order(
    tmp_path: Path, keys: KeyFiles, auth: Callable[..., dict[str, str]]
) -> None:
    async with running_world(tmp_path, keys) as world:
        admin, customer = auth("admin"), auth()
        pid = await product(world, admin, stock=5)
        items = [{"product_id": pid, "quantity": 1}]
        first = await world.place(customer, items, key="same-key-1")
        again = await world.place(customer, items, key="same-key-1")
        other = await world.place(customer, [{"product_id": pid, "quantity": 2}], key="same-key-1")
        missing = await world.http.post(
            "/", json={"items": items, "card_token": "tok_visa_4242"}, headers=customer
        )
        assert first.json()["order_id"] == again.json()["order_id"]
        assert other.status_code == 409
        assert missing.status_code == 400
        await world.settle()
        page = (await world.http.get("/", headers=customer)).json()
        assert page["total"] == 1


async def test_customers_see_only_their_orders(
    tmp_path: Path, keys: KeyFiles, auth: Callable[..., dict[str, str]]
) -> None:
    async with running_world(tmp_path, keys) as world:
        admin = auth("admin")
        pid = await product(world, admin, stock=5)
        mine = await world.place(auth(user_id="a"), [{"product_id": pid, "quantity": 1}])
        await world.settle()
        assert (
            await world.http.get(f"/{mine.json()['order_id']}", headers=auth(user_id="b"))
        ).status_code == 404
        assert (await world.http.get("/", headers=admin)).json()["total"] == 1
        unknown = await world.place(
            auth(),
            [{"product_id": "00000000-0000-7000-8000-000000000000", "quantity": 1}],
            key="key-unknown",
        )
        assert unknown.status_code == 422


async def test_the_sweep_finds_unfinished_orders_without_a_live_lease_by_index(
    tmp_path: Path,
) -> None:
    """The sweep runs every second: it must find the orders in flight through the status
    index, not by reading every order ever placed (NOT IN scanned the table)."""
    engine = create_engine(OrdersSettings(data_dir=tmp_path))
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.run_sync(OrderView.metadata.create_all)
        await conn.execute(
            insert(OrderView),
            [
                {
                    "order_id": order_id,
                    "user_id": "u",
                    "status": status,
                    "total_cents": 1,
                    "items": [],
                    "version": 1,
                    "placed_at": now,
                    "updated_at": now,
                }
                for order_id, status in (
                    ("no-lease", "RESERVED"),
                    ("expired", "CANCELLING"),
                    ("held", "PLACED"),
                    ("done", "CONFIRMED"),
                    ("gone", "CANCELLED"),
                )
            ],
        )
        await conn.execute(
            insert(SagaLease),
            [
                {"order_id": "expired", "owner": "o-1", "expires_at": now - timedelta(seconds=1)},
                {"order_id": "held", "owner": "o-1", "expires_at": now + timedelta(seconds=30)},
            ],
        )
        query = _ORPHANS.params(now=now).compile(
            dialect=engine.dialect, compile_kwargs={"render_postcompile": True}
        )
        values = tuple(query.params[name] for name in query.positiontup or ())
        plan = (await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {query}", values)).all()
    maker = async_sessionmaker(engine, expire_on_commit=False)
    try:
        assert sorted(await in_transaction(maker, _orphans_in, now)) == ["expired", "no-lease"]
        steps = [row[-1] for row in plan]
        assert not any(step.startswith("SCAN order_view") for step in steps), steps
        assert any("ix_order_view_status" in step for step in steps), steps
    finally:
        await engine.dispose()


async def test_a_lease_is_held_by_one_replica_until_it_expires_or_is_released(
    tmp_path: Path,
) -> None:
    engine = create_engine(OrdersSettings(data_dir=tmp_path))
    async with engine.begin() as conn:
        await conn.run_sync(SagaLease.metadata.create_all)
    maker = async_sessionmaker(engine, expire_on_commit=False)
    one, two = (SagaLeases(owner, 0.3, maker) for owner in ("orders-1", "orders-2"))
    try:
        assert await one.claim("o-1") is not None
        assert await one.claim("o-1") is not None  # its own: renewed
        assert await two.claim("o-1") is None
        await asyncio.sleep(0.35)  # expired
        taken = await two.claim("o-1")
        assert taken is not None
        assert not two.expiring(taken)
        assert await one.claim("o-1") is None
        await two.release("o-1")
        assert await one.claim("o-1") is not None
        held = await in_transaction(maker, two.hold, "o-2")
        assert await one.claim("o-2") is None

        def renew_and_drop(session: Session) -> None:
            two.renew(session, "o-2", held)
            two.drop(session, "o-2")

        await in_transaction(maker, renew_and_drop)
        assert await one.claim("o-2") is not None
    finally:
        await engine.dispose()


class GatedPricing(httpx.AsyncBaseTransport):
    """Products behind a gate for ``GET`` (pricing): the first one waits until opened."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner, self.entered, self.gate = inner, asyncio.Event(), asyncio.Event()
        self.waiting, self.two_waiting = 0, asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            self.entered.set()
            self.waiting += 1
            if self.waiting == 2:
                self.two_waiting.set()
            await self.gate.wait()
        return await self.inner.handle_async_request(request)


async def test_a_concurrent_twin_of_a_placement_gets_409_and_one_order_exists(
    tmp_path: Path, keys: KeyFiles, auth: Callable[..., dict[str, str]]
) -> None:
    """Two placements with one Idempotency-Key both pass the lookup while the catalog
    prices them; the key's unique constraint lets one in and the other is told to retry."""
    async with running_world(tmp_path, keys) as world:
        admin, customer = auth("admin"), auth()
        pid = await product(world, admin, stock=3)
        gated = GatedPricing(world.mesh.apps["products"])
        world.mesh.apps["products"] = gated  # type: ignore[assignment]
        items = [{"product_id": pid, "quantity": 1}]
        twins = [
            asyncio.create_task(world.place(customer, items, key="twin-key-0001")) for _ in range(2)
        ]
        try:
            await asyncio.wait_for(gated.two_waiting.wait(), 10)
        finally:
            gated.gate.set()
        answers = [await twin for twin in twins]
        assert sorted(a.status_code for a in answers) == [202, 409]
        await world.settle()
        again = await world.place(customer, items, key="twin-key-0001")
        page = (await world.http.get("/", headers=customer)).json()
        assert page["total"] == 1
        assert again.status_code == 202
        assert again.json()["order_id"] == page["items"][0]["order_id"]


async def test_pricing_an_order_holds_no_database_connection(
    tmp_path: Path, keys: KeyFiles, auth: Callable[..., dict[str, str]]
) -> None:
    """On SQLite orders has one writer connection: while a placement waits for the
    catalog, saga steps and the relay must still be able to write."""
    async with running_world(tmp_path, keys) as world:
        admin, customer = auth("admin"), auth()
        pid = await product(world, admin, stock=3)
        gated = GatedPricing(world.mesh.apps["products"])
        world.mesh.apps["products"] = gated  # type: ignore[assignment]
        placing = asyncio.create_task(world.place(customer, [{"product_id": pid, "quantity": 1}]))
        try:
            await asyncio.wait_for(gated.entered.wait(), 10)
            async with asyncio.timeout(10):
                async with world.orders.state.events.session_maker() as session, session.begin():
                    await session.execute(delete(SagaLease).where(SagaLease.order_id == "none"))
            assert not placing.done()
        finally:
            gated.gate.set()
        assert (await placing).status_code == 202
        await world.settle()
