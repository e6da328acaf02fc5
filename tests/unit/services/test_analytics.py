"""analytics: the folds (revenue, cancellations by reason, orders per minute), the live
handlers agreeing with the pure fold, redelivery, the rebuild's overlay, and auth."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select

from system.chassis.inbox import EventConsumer, Outcome
from system.chassis.keys import KeyFiles
from system.events.schemas import (
    Event,
    OrderCancelledV1,
    OrderConfirmedV1,
    OrderItem,
    OrderPlacedV1,
    PaymentCapturedV1,
    StockReservedV1,
    UserRegisteredV1,
    new_event,
)
from system.services.analytics import store
from system.services.analytics.app import build
from system.services.analytics.consumers import HANDLERS, SOURCE_TOPICS, count
from system.services.analytics.models import CountedEvent
from system.services.analytics.projection import Summary, fold_all, minute_of, summarize
from system.services.analytics.settings import AnalyticsSettings
from tests.conftest import consumer_record as record

Client = AsyncTestClient[Litestar]
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
ITEMS = [OrderItem(product_id="p-1", quantity=1, unit_price_cents=100)]


@pytest.fixture
async def client(tmp_path: Path, keys: KeyFiles) -> AsyncIterator[Client]:
    settings = AnalyticsSettings(
        data_dir=tmp_path / "analytics", log_json=False, jwt_public_key_file=keys.public
    )
    async with AsyncTestClient(build(settings)) as client:
        yield client


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def registered(user: str, when: int = 0) -> Event[Any]:
    payload = UserRegisteredV1(user_id=user, email=f"{user}@example.test", role="customer")
    return new_event(payload, occurred_at=at(when))


def placed(order: str, total: int, when: int) -> Event[Any]:
    payload = OrderPlacedV1(order_id=order, user_id="u", items=ITEMS, total_cents=total)
    return new_event(payload, occurred_at=at(when))


def confirmed(order: str, total: int, when: int = 0) -> Event[Any]:
    payload = OrderConfirmedV1(
        order_id=order, user_id="u", items=ITEMS, total_cents=total, payment_id=f"pay-{order}"
    )
    return new_event(payload, occurred_at=at(when))


def cancelled(order: str, reason: str, when: int = 0) -> Event[Any]:
    payload = OrderCancelledV1(order_id=order, user_id="u", items=ITEMS, reason=reason)
    return new_event(payload, occurred_at=at(when))


def captured(order: str, amount: int) -> Event[Any]:
    return new_event(
        PaymentCapturedV1(payment_id=f"pay-{order}", order_id=order, amount_cents=amount)
    )


def a_day_of_events() -> list[Event[Any]]:
    return [
        registered("u-1"),
        registered("u-2"),
        placed("o-1", 1000, when=5),
        placed("o-2", 2500, when=59),
        placed("o-3", 700, when=60),
        placed("o-4", 400, when=185),
        confirmed("o-1", 1000),
        confirmed("o-2", 2500),
        cancelled("o-3", "card_declined"),
        cancelled("o-4", "out_of_stock"),
        cancelled("o-5", "card_declined"),
        captured("o-1", 1000),
        new_event(StockReservedV1(order_id="o-1", items=[])),
    ]


EXPECTED = {
    "users_registered": 2,
    "orders_placed": 4,
    "orders_confirmed": 2,
    "orders_cancelled": 3,
    "revenue_cents": 3500,
    "captured_cents": 1000,
    "cancellations_by_reason": {"card_declined": 2, "out_of_stock": 1},
    "orders_per_minute": [
        {"minute": "2030-01-01T12:00:00Z", "orders": 2},
        {"minute": "2030-01-01T12:01:00Z", "orders": 1},
        {"minute": "2030-01-01T12:03:00Z", "orders": 1},
    ],
    "events_by_type": {
        "order.cancelled": 3,
        "order.confirmed": 2,
        "order.placed": 4,
        "payment.captured": 1,
        "stock.reserved": 1,
        "user.registered": 2,
    },
}


def as_json(summary: Summary) -> Any:
    return msgspec.json.decode(msgspec.json.encode(summary))


async def handle(client: Client, *events: Event[Any]) -> None:
    for event in events:
        async with client.app.state.events.session_maker() as session, session.begin():
            await count(session, [event])


async def summary(client: Client, headers: dict[str, str]) -> Any:
    response = await client.get("/summary", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_the_pure_fold_counts_revenue_cancellations_and_minutes() -> None:
    events = a_day_of_events()
    state = fold_all([*events, events[6], events[2]])  # two redelivered copies
    assert len(state.seen) == len(events) == len(state.facts)
    assert as_json(summarize(state.facts.values())) == EXPECTED


def test_minutes_are_utc_whatever_the_events_zone() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert minute_of(datetime(2030, 1, 1, 14, 7, 59, 999, tzinfo=plus_two)) == datetime(
        2030, 1, 1, 12, 7, tzinfo=UTC
    )


async def test_the_live_handlers_agree_with_the_pure_fold(
    client: Client, auth: Callable[..., dict[str, str]]
) -> None:
    events = a_day_of_events()
    await handle(client, *events)
    await handle(client, events[6], events[-1])  # without the inbox: still counted once
    live = await summary(client, auth())
    assert live == EXPECTED
    assert live == as_json(summarize(fold_all(events).facts.values()))


async def test_redelivery_through_the_inbox_counts_once(
    client: Client, auth: Callable[..., dict[str, str]]
) -> None:
    inbox = EventConsumer(
        client.app.state.events.session_maker,
        "127.0.0.1:1",  # never started: process() is the whole per-message logic
        "analytics",
        SOURCE_TOPICS,
        HANDLERS,
        retry_backoff=0.01,
        registry=CollectorRegistry(),
    )
    events = a_day_of_events()
    for offset, event in enumerate(events):
        assert await inbox.process(record(event, offset)) is Outcome.PROCESSED
    for event in (events[0], events[6], events[11]):
        assert await inbox.process(record(event, 99)) is Outcome.DUPLICATE
    assert await summary(client, auth()) == EXPECTED
    async with client.app.state.events.session_maker() as session:
        rows = await session.scalar(select(func.count()).select_from(CountedEvent))
    assert rows == len(events)


async def test_the_overlay_replaces_what_the_rebuild_read_and_keeps_the_rest(
    client: Client, auth: Callable[..., dict[str, str]]
) -> None:
    events = a_day_of_events()
    read, tail = events[:-3], events[-3:]  # the rebuild read `read`; `tail` came after
    missed = read[4]  # say its handler failed every attempt: the live table lacks it
    await handle(client, *(e for e in events if e is not missed))
    assert (await summary(client, auth()))["orders_placed"] == 3

    rebuilt = fold_all([*read, read[0]])  # the log holds a duplicate too
    maker = client.app.state.events.session_maker
    async with maker() as session, session.begin():
        await store.overlay(session, rebuilt)
        assert as_json(await store.read_summary(session)) == EXPECTED
    assert await summary(client, auth()) == EXPECTED, "committed; nothing counted twice"

    await handle(client, missed, *tail)  # the live consumer catches up later: no effect
    assert await summary(client, auth()) == EXPECTED
    async with maker() as session:
        ids = set((await session.scalars(select(CountedEvent.event_id))).all())
    assert ids == {e.id for e in events}


async def test_the_overlay_drops_what_the_fold_no_longer_counts(client: Client) -> None:
    event = registered("u-1")
    await handle(client, event)
    rebuilt = fold_all([event])
    rebuilt.facts.clear()  # as if the fold stopped counting this type
    async with client.app.state.events.session_maker() as session, session.begin():
        await store.overlay(session, rebuilt)
        assert (await store.read_summary(session)).users_registered == 0


async def test_who_may_read_and_rebuild(
    client: Client, auth: Callable[..., dict[str, str]]
) -> None:
    assert (await client.get("/summary")).status_code == 401
    empty = await summary(client, auth())
    assert empty["orders_placed"] == 0
    assert (empty["orders_per_minute"], empty["cancellations_by_reason"]) == ([], {})
    assert (await client.post("/rebuild")).status_code == 401
    denied = await client.post("/rebuild", headers=auth())
    assert denied.status_code == 403
    assert denied.headers["content-type"] == "application/problem+json"
    unconfigured = await client.post("/rebuild", headers=auth("admin"))
    assert unconfigured.status_code == 503
    assert unconfigured.headers["content-type"] == "application/problem+json"
    assert unconfigured.json()["detail"] == "no Kafka configured"
