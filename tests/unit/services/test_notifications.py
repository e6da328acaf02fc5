"""notifications: one notification per event (handler, inbox redelivery, UNIQUE guard),
templates, and who may read which notifications."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from system.chassis.inbox import EventConsumer, Outcome
from system.chassis.keys import KeyFiles
from system.events.schemas import (
    Event,
    OrderCancelledV1,
    OrderConfirmedV1,
    OrderItem,
    OrderPlacedV1,
    PaymentCapturedV1,
    UserRegisteredV1,
    new_event,
)
from system.services.notifications.app import build
from system.services.notifications.consumers import HANDLERS, notify
from system.services.notifications.models import Notification
from system.services.notifications.settings import NotificationsSettings
from tests.conftest import consumer_record as record

Client = AsyncTestClient[Litestar]
ITEMS = [OrderItem(product_id="p-1", quantity=2, unit_price_cents=1250)]


@pytest.fixture
async def client(tmp_path: Path, keys: KeyFiles) -> AsyncIterator[Client]:
    settings = NotificationsSettings(
        data_dir=tmp_path / "notifications", log_json=False, jwt_public_key_file=keys.public
    )
    async with AsyncTestClient(build(settings)) as client:
        yield client


def registered(user: str) -> Event[Any]:
    return new_event(UserRegisteredV1(user_id=user, email=f"{user}@example.test", role="customer"))


def placed(order: str, user: str) -> Event[Any]:
    return new_event(OrderPlacedV1(order_id=order, user_id=user, items=ITEMS, total_cents=2500))


def confirmed(order: str, user: str) -> Event[Any]:
    return new_event(
        OrderConfirmedV1(
            order_id=order, user_id=user, items=ITEMS, total_cents=2500, payment_id="pay-1"
        )
    )


def cancelled(order: str, user: str, reason: str = "card_declined") -> Event[Any]:
    return new_event(OrderCancelledV1(order_id=order, user_id=user, items=ITEMS, reason=reason))


async def handle(client: Client, *events: Event[Any]) -> None:
    """Each event through the handler, in its own transaction (as the inbox runs it)."""
    for event in events:
        async with client.app.state.events.session_maker() as session, session.begin():
            await notify(session, [event])


async def stored(client: Client) -> list[Notification]:
    async with client.app.state.events.session_maker() as session:
        return list((await session.scalars(select(Notification))).all())


def consumer(client: Client, name: str = "notifications") -> EventConsumer:
    return EventConsumer(
        client.app.state.events.session_maker,
        "127.0.0.1:1",  # never started: process() is the whole per-message logic
        name,
        ["users.events", "orders.events"],
        HANDLERS,
        retry_backoff=0.01,
        registry=CollectorRegistry(),
    )


async def test_every_user_and_order_event_notifies_its_user_once(
    client: Client, auth: Callable[..., dict[str, str]]
) -> None:
    events = [
        registered("u-1"),
        placed("o-1", "u-1"),
        confirmed("o-1", "u-1"),
        cancelled("o-2", "u-1", "out_of_stock"),
    ]
    await handle(client, *events)
    await handle(client, *events)  # called again without the inbox: still one each
    rows = await stored(client)
    assert sorted(r.event_id for r in rows) == sorted(str(e.id) for e in events)
    assert {r.channel for r in rows} == {"email"}
    page = (await client.get("/me", headers=auth(user_id="u-1"))).json()
    assert page["total"] == 4
    by_type = {n["event_type"]: n for n in page["items"]}
    assert by_type["user.registered"]["subject"] == "Welcome"
    assert "u-1@example.test" in by_type["user.registered"]["body"]
    assert by_type["order.placed"]["subject"] == "Order o-1 received"
    assert by_type["order.confirmed"]["subject"] == "Order o-1 confirmed: 25.00"
    assert "2 items" in by_type["order.confirmed"]["body"]
    assert by_type["order.cancelled"]["subject"] == "Order o-2 cancelled"
    assert "out_of_stock" in by_type["order.cancelled"]["body"]


async def test_redelivery_through_the_inbox_notifies_once(client: Client) -> None:
    event = confirmed("o-9", "u-9")
    inbox = consumer(client)
    assert await inbox.process(record(event, offset=0)) is Outcome.PROCESSED
    assert await inbox.process(record(event, offset=1)) is Outcome.DUPLICATE
    # a consumer with another inbox name (the inbox does not know the event) still adds
    # nothing: the handler finds the event's notification
    assert await consumer(client, "elsewhere").process(record(event)) is Outcome.PROCESSED
    payment = new_event(PaymentCapturedV1(payment_id="p", order_id="o-9", amount_cents=1))
    assert await inbox.process(record(payment)) is Outcome.UNHANDLED
    [row] = await stored(client)
    assert (row.event_id, row.user_id, row.event_type) == (str(event.id), "u-9", "order.confirmed")


async def test_the_table_refuses_a_second_notification_for_an_event(client: Client) -> None:
    event = registered("u-3")
    await handle(client, event)
    with pytest.raises(IntegrityError):
        async with client.app.state.events.session_maker() as session, session.begin():
            session.add(
                Notification(
                    user_id="u-3",
                    event_id=str(event.id),
                    event_type=event.type,
                    channel="email",
                    subject="again",
                    body="again",
                )
            )
    assert len(await stored(client)) == 1


async def test_customers_read_their_own_newest_first_and_paged(
    client: Client, auth: Callable[..., dict[str, str]]
) -> None:
    mine = [registered("u-1"), placed("o-1", "u-1"), confirmed("o-1", "u-1")]
    await handle(client, mine[0], registered("u-2"), mine[1], placed("o-2", "u-2"), mine[2])
    page = (await client.get("/me", headers=auth(user_id="u-1"))).json()
    assert (page["total"], page["limit"], page["offset"]) == (3, 20, 0)
    assert [n["event_id"] for n in page["items"]] == [str(e.id) for e in reversed(mine)]
    assert all(n["user_id"] == "u-1" for n in page["items"])
    second = (await client.get("/me?limit=1&offset=1", headers=auth(user_id="u-1"))).json()
    assert (second["total"], second["limit"], second["offset"]) == (3, 1, 1)
    assert [n["event_id"] for n in second["items"]] == [str(mine[1].id)]
    nobody = (await client.get("/me", headers=auth(user_id="u-none"))).json()
    assert (nobody["total"], nobody["items"]) == (0, [])
    bad = await client.get("/me?limit=0", headers=auth(user_id="u-1"))
    assert bad.status_code == 400
    assert bad.headers["content-type"] == "application/problem+json"


async def test_only_admins_list_everyones_and_a_token_is_needed(
    client: Client, auth: Callable[..., dict[str, str]]
) -> None:
    await handle(client, registered("u-1"), registered("u-2"), placed("o-2", "u-2"))
    admin = auth("admin", user_id="admin-1")
    everyone = (await client.get("/", headers=admin)).json()
    assert everyone["total"] == 3
    assert {n["user_id"] for n in everyone["items"]} == {"u-1", "u-2"}
    filtered = (await client.get("/?user_id=u-2&limit=1", headers=admin)).json()
    assert (filtered["total"], len(filtered["items"]), filtered["limit"]) == (2, 1, 1)
    assert filtered["items"][0]["event_type"] == "order.placed", "newest first"
    denied = await client.get("/", headers=auth(user_id="u-1"))
    assert denied.status_code == 403
    assert denied.headers["content-type"] == "application/problem+json"
    for path in ("/", "/me"):
        assert (await client.get(path)).status_code == 401
    async with client.app.state.events.session_maker() as session:
        assert await session.scalar(select(func.count()).select_from(Notification)) == 3
