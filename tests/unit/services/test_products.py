"""products: catalog rules, paging and filters, and reservations that never oversell."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import event, select

from system.chassis.keys import KeyFiles
from system.chassis.outbox import OutboxMessage
from system.events.schemas import OrderCancelledV1, OrderConfirmedV1, OrderItem, new_event
from system.services.products import stock
from system.services.products.app import build
from system.services.products.consumers import on_order_cancelled, on_order_confirmed
from system.services.products.settings import ProductsSettings
from system.services.products.views import ProductReads

Client = AsyncTestClient[Litestar]


@pytest.fixture
async def client(tmp_path: Path, keys: KeyFiles) -> AsyncIterator[Client]:
    settings = ProductsSettings(
        data_dir=tmp_path / "products", log_json=False, jwt_public_key_file=keys.public
    )
    async with AsyncTestClient(build(settings)) as client:
        yield client


async def new_product(
    client: Client, admin: dict[str, str], sku: str = "LAMP-1", stock: int = 3, **fields: Any
) -> dict[str, Any]:
    body = {
        "sku": sku,
        "name": f"Product {sku}",
        "price_cents": 1999,
        "initial_stock": stock,
        **fields,
    }
    response = await client.post("/", json=body, headers=admin)
    assert response.status_code == 201, response.text
    product: dict[str, Any] = response.json()
    return product


def reserve_body(*lines: tuple[str, int]) -> dict[str, Any]:
    return {"items": [{"product_id": pid, "quantity": qty} for pid, qty in lines]}


async def stock_of(client: Client, pid: str, headers: dict[str, str]) -> dict[str, int]:
    levels: dict[str, int] = (await client.get(f"/{pid}", headers=headers)).json()["stock"]
    return levels


async def test_only_admins_write_the_catalog(
    client: Client, auth: Callable[..., dict[str, str]]
) -> None:
    admin, customer = auth("admin"), auth()
    product = await new_product(client, admin)
    denied = await client.post(
        "/", json={"sku": "X-1", "name": "x", "price_cents": 1}, headers=customer
    )
    assert denied.status_code == 403
    assert denied.headers["content-type"] == "application/problem+json"
    assert (
        await client.patch(f"/{product['id']}", json={"name": "y"}, headers=customer)
    ).status_code == 403
    changed = await client.patch(f"/{product['id']}", json={"price_cents": 2500}, headers=admin)
    assert changed.json()["price_cents"] == 2500
    assert changed.json()["name"] == "Product LAMP-1"
    assert (await client.get("/")).status_code == 401, "reads need a token too"


async def test_the_catalog_announces_each_price_and_each_withdrawal(
    client: Client, auth: Callable[..., dict[str, str]]
) -> None:
    admin = auth("admin")
    product = await new_product(client, admin, price_cents=1999)
    pid = product["id"]
    for change in ({"name": "renamed"}, {"price_cents": 1999}, {"price_cents": 2500}):
        assert (await client.patch(f"/{pid}", json=change, headers=admin)).status_code == 200
    refused = await client.patch(f"/{pid}", json={"price_cents": -1}, headers=admin)
    assert refused.status_code == 400
    assert (await client.delete(f"/{pid}", headers=admin)).status_code == 204
    async with client.app.state.events.session_maker() as session:
        rows = (await session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))).all()
    staged = [(r.event_type, json.loads(r.payload)["data"]) for r in rows]
    assert staged == [  # created, repriced (not renamed, nor "changed" to the same price)
        ("product.priced", {"product_id": pid, "price_cents": 1999}),
        ("product.priced", {"product_id": pid, "price_cents": 2500}),
        ("product.withdrawn", {"product_id": pid}),
    ]
    assert {r.topic for r in rows} == {"products.catalog"}
    assert {r.key for r in rows} == {pid}  # one partition: a product's events stay in order


async def test_duplicate_skus_and_bad_bodies_are_4xx_problems(
    client: Client, auth: Callable[..., dict[str, str]]
) -> None:
    admin = auth("admin")
    await new_product(client, admin)
    again = await client.post(
        "/", json={"sku": "LAMP-1", "name": "x", "price_cents": 1}, headers=admin
    )
    assert again.status_code == 409
    for body in (
        {"sku": "bad sku!", "name": "x", "price_cents": 1},
        {"sku": "OK-1", "name": "x", "price_cents": -5},
        {"sku": "OK-1", "name": "x", "price_cents": 1, "stock": 5},
    ):
        response = await client.post("/", json=body, headers=admin)
        assert response.status_code == 400, body
        assert response.headers["content-type"] == "application/problem+json"


async def test_paging_and_filters(client: Client, auth: Callable[..., dict[str, str]]) -> None:
    admin = auth("admin")
    for i in range(7):
        await new_product(
            client,
            admin,
            sku=f"SKU-{i}",
            stock=i % 2,
            price_cents=100 * (i + 1),
            category="lamps" if i < 3 else "desks",
        )
    page = (await client.get("/?limit=3&offset=3", headers=admin)).json()
    assert (page["total"], page["limit"], page["offset"], len(page["items"])) == (7, 3, 3, 3)
    everything = (await client.get("/?limit=100", headers=admin)).json()["items"]
    assert len({p["id"] for p in everything}) == 7
    lamps = (await client.get("/?category=lamps", headers=admin)).json()
    assert lamps["total"] == 3
    priced = (await client.get("/?min_price=300&max_price=500", headers=admin)).json()
    assert sorted(p["price_cents"] for p in priced["items"]) == [300, 400, 500]
    in_stock = (await client.get("/?in_stock=true", headers=admin)).json()
    assert all(p["stock"]["available"] > 0 for p in in_stock["items"])
    assert (await client.get("/?limit=0", headers=admin)).status_code == 400


async def test_a_reservation_is_idempotent_by_order(
    client: Client, auth: Callable[..., dict[str, str]]
) -> None:
    admin, customer = auth("admin"), auth()
    pid = (await new_product(client, admin, stock=5))["id"]
    first = await client.put("/reservations/order-1", json=reserve_body((pid, 2)), headers=customer)
    again = await client.put("/reservations/order-1", json=reserve_body((pid, 2)), headers=customer)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert await stock_of(client, pid, customer) == {
        "available": 3,
        "reserved": 2,
        "sold": 0,
        "received": 5,
    }
    other = await client.put("/reservations/order-1", json=reserve_body((pid, 1)), headers=customer)
    assert other.status_code == 409
    async with client.app.state.events.session_maker() as session:
        staged = (await session.scalars(select(OutboxMessage.event_type))).all()
    assert staged == ["product.priced", "stock.reserved"]  # the repeat announced nothing new


async def test_concurrent_orders_for_the_last_unit_get_it_once(
    client: Client, auth: Callable[..., dict[str, str]]
) -> None:
    admin, customer = auth("admin"), auth()
    pid = (await new_product(client, admin, stock=1))["id"]
    responses = await asyncio.gather(
        *(
            client.put(f"/reservations/order-{i}", json=reserve_body((pid, 1)), headers=customer)
            for i in range(20)
        )
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [409] * 19
    assert await stock_of(client, pid, customer) == {
        "available": 0,
        "reserved": 1,
        "sold": 0,
        "received": 1,
    }


async def test_a_short_line_reserves_nothing(
    client: Client, auth: Callable[..., dict[str, str]]
) -> None:
    admin, customer = auth("admin"), auth()
    plenty = (await new_product(client, admin, sku="A-1", stock=10))["id"]
    scarce = (await new_product(client, admin, sku="B-1", stock=1))["id"]
    short = await client.put(
        "/reservations/o", json=reserve_body((plenty, 2), (scarce, 2)), headers=customer
    )
    assert short.status_code == 409
    assert scarce in short.json()["detail"]
    assert (await stock_of(client, plenty, customer))["available"] == 10
    unknown = await client.put(
        "/reservations/o",
        json=reserve_body(("00000000-0000-7000-8000-000000000000", 1)),
        headers=customer,
    )
    assert unknown.status_code == 404


async def test_release_and_commit_settle_once_and_never_contradict(
    client: Client, auth: Callable[..., dict[str, str]]
) -> None:
    admin, customer = auth("admin"), auth()
    pid = (await new_product(client, admin, stock=4))["id"]
    for order in ("keep", "drop"):
        await client.put(f"/reservations/{order}", json=reserve_body((pid, 1)), headers=customer)
    for _ in range(2):
        assert (await client.post("/reservations/keep/commit", headers=customer)).status_code == 200
        assert (
            await client.post("/reservations/drop/release", headers=customer)
        ).status_code == 200
    assert await stock_of(client, pid, customer) == {
        "available": 3,
        "reserved": 0,
        "sold": 1,
        "received": 4,
    }
    assert (await client.post("/reservations/keep/release", headers=customer)).status_code == 409
    assert (await client.post("/reservations/drop/commit", headers=customer)).status_code == 409
    assert (await client.post("/reservations/none/commit", headers=customer)).status_code == 409
    async with client.app.state.events.session_maker() as session:
        kinds = [
            r.event_type
            for r in (await session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))).all()
        ]
    assert kinds == [
        "product.priced",
        "stock.reserved",
        "stock.reserved",
        "stock.committed",
        "stock.released",
    ]


async def test_order_events_settle_reservations(
    client: Client, auth: Callable[..., dict[str, str]]
) -> None:
    admin, customer = auth("admin"), auth()
    pid = (await new_product(client, admin, stock=4))["id"]
    for order in ("o-ok", "o-ko"):
        await client.put(f"/reservations/{order}", json=reserve_body((pid, 2)), headers=customer)
    items = [OrderItem(product_id=pid, quantity=2, unit_price_cents=1999)]
    confirmed = new_event(
        OrderConfirmedV1(
            order_id="o-ok", user_id="u", items=items, total_cents=3998, payment_id="p"
        )
    )
    cancelled = new_event(
        OrderCancelledV1(order_id="o-ko", user_id="u", items=items, reason="card_declined")
    )
    never_reserved = new_event(
        OrderCancelledV1(order_id="o-none", user_id="u", items=items, reason="out_of_stock")
    )
    maker = client.app.state.events.session_maker
    async with maker() as session, session.begin():
        await on_order_confirmed(session, confirmed)
        await on_order_cancelled(session, cancelled)
        await on_order_cancelled(session, never_reserved)
    assert await stock_of(client, pid, customer) == {
        "available": 2,
        "reserved": 0,
        "sold": 2,
        "received": 4,
    }


async def test_settlements_move_counters_at_commit_once_per_product_in_id_order(
    client: Client, auth: Callable[..., dict[str, str]]
) -> None:
    """A consumer settles a whole fetch in one transaction: the counters must move once
    per product and target, sorted, just before the commit (on PostgreSQL, two replicas
    settling in arrival order deadlocked), and not at all when it rolls back."""
    admin, customer = auth("admin"), auth()
    pids = sorted([(await new_product(client, admin, sku=f"S-{n}", stock=9))["id"] for n in "abc"])
    a, b, c = pids
    for order, lines in {
        "o1": [(b, 2), (c, 1)],
        "o2": [(c, 1), (a, 1)],
        "o3": [(b, 2), (c, 1)],
        "o4": [(c, 1), (a, 1)],
        "o5": [(a, 3)],
    }.items():
        await client.put(f"/reservations/{order}", json=reserve_body(*lines), headers=customer)
    engine = client.app.state.events.session_maker.kw["bind"]
    updates: list[uuid.UUID] = []

    def record(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.startswith("UPDATE product "):
            updates.append(uuid.UUID(bytes=bytes(params[-1])))

    maker = client.app.state.events.session_maker
    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        async with maker() as session:
            await session.begin()
            await session.run_sync(stock.release_in, "o5")
            await session.rollback()  # the batch failed
        assert updates == []
        async with maker() as session, session.begin():
            for order in ("o1", "o2", "o3"):
                await session.run_sync(stock.commit_in, order)
            await session.run_sync(stock.release_in, "o4")
            assert updates == []  # no counter row locked while the batch runs
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
    # a: committed 1 + released 1; b: committed 4; c: committed 3 + released 1
    assert updates == [uuid.UUID(p) for p in (a, a, b, c, c)]
    levels = [await stock_of(client, pid, customer) for pid in pids]
    assert [(s["available"], s["reserved"], s["sold"]) for s in levels] == [
        (5, 3, 1),  # o5 still holds 3
        (5, 0, 4),
        (6, 0, 3),
    ]


async def test_restocking_adds_to_available_and_to_received(
    client: Client, auth: Callable[..., dict[str, str]]
) -> None:
    admin = auth("admin")
    pid = (await new_product(client, admin, stock=2))["id"]
    restocked = await client.post(f"/{pid}/restock", json={"quantity": 3}, headers=admin)
    assert restocked.status_code == 201, restocked.text
    assert restocked.json()["stock"] == {"available": 5, "reserved": 0, "sold": 0, "received": 5}
    refused = await client.post(f"/{pid}/restock", json={"quantity": 0}, headers=admin)
    assert refused.status_code == 400
    assert (await stock_of(client, pid, admin))["received"] == 5


@pytest.mark.parametrize(
    "query", ["offset=10000000000000000000000", "min_price=10000000000000000000000", "max_price=-1"]
)
async def test_a_huge_number_in_the_query_is_a_400_not_a_500(
    client: Client, auth: Callable[..., dict[str, str]], query: str
) -> None:
    """Found by the contract suite (on orders' list): an offset beyond SQLite's 64-bit
    integers reached the database and failed with a 500. Every list bounds its offset
    (``system.chassis.paging``), and products its prices."""
    response = await client.get(f"/?{query}", headers=auth())
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_cached_view_follows_the_other_replicas_writes(
    tmp_path: Path, keys: KeyFiles, auth: Callable[..., dict[str, str]]
) -> None:
    """Two replicas on one SQLite file: each caches ``GET /{id}``, and a stock or catalog
    change committed by either is what the next read on the other one returns."""
    settings = ProductsSettings(
        data_dir=tmp_path / "products", log_json=False, jwt_public_key_file=keys.public
    )
    admin = auth("admin")
    async with AsyncTestClient(build(settings)) as one, AsyncTestClient(build(settings)) as two:
        pid = (await new_product(one, admin, stock=3))["id"]
        assert (await stock_of(two, pid, admin))["available"] == 3
        assert (await stock_of(one, pid, admin))["available"] == 3
        await one.put("/reservations/o-1", json=reserve_body((pid, 2)), headers=admin)
        assert (await stock_of(two, pid, admin))["available"] == 1
        await two.patch(f"/{pid}", json={"name": "Renamed"}, headers=admin)
        assert (await one.get(f"/{pid}", headers=admin)).json()["name"] == "Renamed"
        assert (await two.get(f"/{pid}", headers=admin)).json()["name"] == "Renamed"
        await two.post("/reservations/o-1/release", headers=admin)
        assert (await stock_of(one, pid, admin))["available"] == 3
        other = (await new_product(two, admin, sku="LAMP-2"))["id"]
        assert (await one.get(f"/{other}", headers=admin)).status_code == 200
        assert (await two.delete(f"/{other}", headers=admin)).status_code == 204
        assert (await one.get(f"/{other}", headers=admin)).status_code == 404


async def test_a_cached_answer_is_the_same_complete_response_every_time(
    client: Client, auth: Callable[..., dict[str, str]]
) -> None:
    """One answer object serves every read of a cached row: nothing accumulates on it."""
    admin = auth("admin")
    pid = (await new_product(client, admin, stock=2))["id"]
    answers = [await client.get(f"/{pid}", headers=admin) for _ in range(3)]
    assert {a.status_code for a in answers} == {200}
    assert len({a.content for a in answers}) == 1
    headers = [sorted((k, v) for k, v in a.headers.items() if k != "date") for a in answers]
    assert headers[0] == headers[1] == headers[2]
    assert answers[0].headers["content-type"] == "application/json"
    assert int(answers[0].headers["content-length"]) == len(answers[0].content)
    await client.post(f"/{pid}/restock", json={"quantity": 3}, headers=admin)
    assert (await client.get(f"/{pid}", headers=admin)).json()["stock"]["available"] == 5


async def test_the_engine_read_path_gives_the_same_row(
    client: Client, auth: Callable[..., dict[str, str]]
) -> None:
    """PostgreSQL (and a busy SQLite) read through the engine: the same row as inline."""
    pid = uuid.UUID((await new_product(client, auth("admin"), stock=4))["id"])
    reads: ProductReads = client.app.state.product_reads
    inline = await reads.answer(pid, lambda row: row)
    assert inline is not None
    assert inline[0] == pid
    assert inline[-4:] == (4, 0, 0, 4)
    assert await reads._through_engine(pid) == inline
    assert await reads._through_engine(uuid.uuid4()) is None


async def test_a_product_with_reservation_history_is_not_deleted_and_says_why(
    client: Client, auth: Callable[..., dict[str, str]]
) -> None:
    admin = auth("admin")
    pid = (await new_product(client, admin, stock=2))["id"]
    held = await client.put("/reservations/o-9", json=reserve_body((pid, 1)), headers=admin)
    assert held.status_code == 200
    assert (await client.post("/reservations/o-9/release", headers=admin)).status_code == 200
    refused = await client.delete(f"/{pid}", headers=admin)
    assert refused.status_code == 409, refused.text
    assert "reservation history" in refused.json()["detail"]
    assert (await client.get(f"/{pid}", headers=admin)).status_code == 200
    fresh = (await new_product(client, admin, sku="LAMP-2"))["id"]
    assert (await client.delete(f"/{fresh}", headers=admin)).status_code == 204
    assert (await client.get(f"/{fresh}", headers=admin)).status_code == 404
