"""The analytics projection against a real Kafka (through Toxiproxy, as services see it).

Events go straight onto the topics (one of them twice, plus one unreadable message); the
analytics app runs in this process with its live inbox consumer; once the live summary
shows every event, ``POST /rebuild`` replays the topics from offset 0 and must answer the
very same figures, which the test computes on its own. A second batch is produced while
a rebuild runs, to show the live consumer and the rebuild never count an event twice.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from litestar import Litestar
from litestar.testing import AsyncTestClient

from system.chassis.keys import KeyFiles, key_id
from system.events import (
    Event,
    OrderCancelledV1,
    OrderConfirmedV1,
    OrderItem,
    OrderPlacedV1,
    PaymentCapturedV1,
    StockReservedV1,
    UserRegisteredV1,
    encode,
    new_event,
)
from system.services.analytics.app import build
from system.services.analytics.settings import AnalyticsSettings
from system.services.users.security import TokenIssuer

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("analytics")]

Client = AsyncTestClient[Litestar]
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
ITEMS = [OrderItem(product_id="p-1", quantity=1, unit_price_cents=100)]


@pytest.fixture
def keys(tmp_path: Path) -> KeyFiles:
    return KeyFiles(tmp_path / "jwt").ensure()


@pytest.fixture
def auth(keys: KeyFiles) -> Callable[..., dict[str, str]]:
    issuer = TokenIssuer(
        keys.private.read_bytes(),
        key_id(keys.public.read_bytes()),
        "microharness-users",
        "microharness",
        timedelta(hours=1),
    )

    def headers(role: str = "customer", user_id: str = "user-1") -> dict[str, str]:
        token = issuer.issue(user_id=user_id, role=role, email=f"{user_id}@example.test")
        return {"Authorization": f"Bearer {token}"}

    return headers


# -- the events, and the figures they must give ---------------------------------------
def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def first_batch() -> list[Event[Any]]:
    def placed(order: str, total: int, when: int) -> Event[Any]:
        payload = OrderPlacedV1(order_id=order, user_id="u-1", items=ITEMS, total_cents=total)
        return new_event(payload, occurred_at=at(when))

    def confirmed(order: str, total: int) -> Event[Any]:
        payload = OrderConfirmedV1(
            order_id=order, user_id="u-1", items=ITEMS, total_cents=total, payment_id="pay"
        )
        return new_event(payload, occurred_at=at(200))

    def cancelled(order: str, reason: str) -> Event[Any]:
        payload = OrderCancelledV1(order_id=order, user_id="u-2", items=ITEMS, reason=reason)
        return new_event(payload, occurred_at=at(200))

    return [
        *(
            new_event(UserRegisteredV1(user_id=u, email=f"{u}@example.test", role="customer"))
            for u in ("u-1", "u-2", "u-3")
        ),
        placed("o-1", 1200, when=1),
        placed("o-2", 800, when=30),
        placed("o-3", 450, when=61),
        placed("o-4", 999, when=150),
        placed("o-5", 300, when=151),
        confirmed("o-1", 1200),
        confirmed("o-2", 800),
        cancelled("o-3", "card_declined"),
        cancelled("o-4", "out_of_stock"),
        cancelled("o-5", "card_declined"),
        new_event(PaymentCapturedV1(payment_id="pay-1", order_id="o-1", amount_cents=1200)),
        new_event(StockReservedV1(order_id="o-1", items=[])),
    ]


def second_batch() -> list[Event[Any]]:
    return [
        new_event(
            OrderPlacedV1(order_id=f"o-{n}", user_id="u-3", items=ITEMS, total_cents=100),
            occurred_at=at(400),
        )
        for n in range(10, 16)
    ] + [
        new_event(
            OrderConfirmedV1(
                order_id="o-10", user_id="u-3", items=ITEMS, total_cents=100, payment_id="p"
            )
        )
    ]


def expected(events: Sequence[Event[Any]]) -> dict[str, Any]:
    """The summary, computed here from the payloads (once per event id)."""
    unique = list({e.id: e for e in events}.values())

    def of(kind: str) -> list[Any]:
        return [e for e in unique if e.type == kind]

    minutes = Counter(
        e.occurred_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:00Z") for e in of("order.placed")
    )
    return {
        "users_registered": len(of("user.registered")),
        "orders_placed": len(of("order.placed")),
        "orders_confirmed": len(of("order.confirmed")),
        "orders_cancelled": len(of("order.cancelled")),
        "revenue_cents": sum(e.data.total_cents for e in of("order.confirmed")),
        "captured_cents": sum(e.data.amount_cents for e in of("payment.captured")),
        "cancellations_by_reason": dict(Counter(e.data.reason for e in of("order.cancelled"))),
        "orders_per_minute": [{"minute": m, "orders": n} for m, n in sorted(minutes.items())],
        "events_by_type": dict(Counter(e.type for e in unique)),
    }


# -- helpers ---------------------------------------------------------------------------
async def produce(bootstrap: str, events: Sequence[Event[Any]], *raw: tuple[str, bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(event.topic, encode(event), key=event.key.encode())
        for topic, value in raw:
            await producer.send_and_wait(topic, value, key=b"junk")
    finally:
        await producer.stop()


async def eventually(
    client: Client, headers: dict[str, str], want: dict[str, Any], timeout: float = 30.0
) -> dict[str, Any]:
    """Poll the live summary until it equals ``want``, or fail showing the last one."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: dict[str, Any] = {}
    for _ in itertools.count():
        response = await client.get("/summary", headers=headers)
        last = response.json()
        if response.status_code == 200 and last == want:
            return last
        if loop.time() > deadline:
            break
        await asyncio.sleep(0.1)
    pytest.fail(f"the live summary never became {want}; last {last}")


# -- the test --------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_the_rebuild_from_offset_0_equals_the_live_projection(
    bootstrap: str, tmp_path: Path, keys: KeyFiles, auth: Callable[..., dict[str, str]]
) -> None:
    batch = first_batch()
    duplicate = batch[6]  # o-1 confirmed, delivered twice (a producer retry, say)
    await produce(bootstrap, [*batch, duplicate], ("orders.events", b"\x00not an event"))
    want = expected([*batch, duplicate])
    assert (want["revenue_cents"], want["orders_confirmed"]) == (2000, 2)

    settings = AnalyticsSettings(
        data_dir=tmp_path / "analytics",
        log_json=False,
        jwt_public_key_file=keys.public,
        kafka_bootstrap=bootstrap,
    )
    customer, admin = auth(), auth("admin", user_id="admin-1")
    async with AsyncTestClient(build(settings), timeout=60) as client:
        live = await eventually(client, customer, want)

        response = await client.post("/rebuild", headers=admin)
        assert response.status_code == 200, response.text
        rebuilt = response.json()
        assert rebuilt["summary"] == live == want
        assert rebuilt["events_folded"] == len(batch) + 1, "the duplicate is read, not counted"
        assert rebuilt["rejected"] == 1
        assert sum(rebuilt["end_offsets"].values()) == len(batch) + 2
        assert (await client.get("/summary", headers=customer)).json() == want

        # more events produced while a rebuild runs (the live consumer keeps consuming):
        # whichever path counts each of them, read before or after the captured end
        # offsets, each counts once
        more = second_batch()
        rebuilding = asyncio.create_task(client.post("/rebuild", headers=admin))
        await produce(bootstrap, more)
        assert (await rebuilding).status_code == 200
        want = expected([*batch, *more])
        await eventually(client, customer, want)
        again = await client.post("/rebuild", headers=admin)
        assert again.json()["summary"] == want
        assert again.json()["events_folded"] == len(batch) + 1 + len(more)
