"""payments: idempotent authorize, deterministic declines, the state machine, the ledger."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from harness.inprocess import build_system, running
from system.chassis.keys import KeyFiles
from system.events.schemas import OrderConfirmedV1, OrderItem, new_event
from system.services.payments.app import build
from system.services.payments.consumers import on_order_confirmed
from system.services.payments.provider import Decision
from system.services.payments.settings import PaymentsSettings

Client = AsyncTestClient[Litestar]


@pytest.fixture
async def client(tmp_path: Path, keys: KeyFiles) -> AsyncIterator[Client]:
    settings = PaymentsSettings(
        data_dir=tmp_path / "payments",
        log_json=False,
        jwt_public_key_file=keys.public,
        max_amount_cents=50_000,
    )
    async with AsyncTestClient(build(settings)) as client:
        yield client


class HeldProvider:
    """The real provider, each authorization held first by ``hold(order_id)``."""

    def __init__(self, real: Any, hold: Callable[[str], Awaitable[None]]) -> None:
        self.real, self.hold = real, hold

    async def authorize(self, order_id: str, amount: int, card: str) -> Decision:
        await self.hold(order_id)
        decision: Decision = await self.real.authorize(order_id, amount, card)
        return decision


def auth_body(order: str, amount: int = 1999, card: str = "tok_visa_4242") -> dict[str, object]:
    return {"order_id": order, "amount_cents": amount, "card_token": card}


async def test_authorize_is_idempotent_by_order(
    client: Client, auth: Callable[..., dict[str, str]]
) -> None:
    customer = auth()
    first = await client.post("/authorize", json=auth_body("o1"), headers=customer)
    again = await client.post("/authorize", json=auth_body("o1"), headers=customer)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json() == again.json()
    assert first.json()["status"] == "authorized"
    changed = await client.post("/authorize", json=auth_body("o1", amount=2000), headers=customer)
    assert changed.status_code == 409


@pytest.mark.parametrize(
    ("card", "amount", "reason"),
    [
        ("tok_decline_0001", 100, "card_declined"),
        ("tok_insufficient_funds", 100, "insufficient_funds"),
        ("tok_expired_2020", 100, "expired_card"),
        ("tok_visa_4242", 50_001, "amount_limit"),
    ],
)
async def test_declines_follow_the_providers_rules_and_are_recorded(
    client: Client, auth: Callable[..., dict[str, str]], card: str, amount: int, reason: str
) -> None:
    customer = auth()
    declined = await client.post("/authorize", json=auth_body("o", amount, card), headers=customer)
    assert declined.status_code == 402
    assert declined.headers["content-type"] == "application/problem+json"
    assert declined.json()["extra"]["reason"] == reason
    repeat = await client.post("/authorize", json=auth_body("o", amount, card), headers=customer)
    assert repeat.json() == declined.json()
    stored = (await client.get("/o", headers=customer)).json()
    assert (stored["status"], stored["decline_reason"]) == ("declined", reason)
    assert (await client.post("/o/void", headers=customer)).json()["status"] == "declined"


async def test_the_state_machine_and_its_ledger_reconcile(
    client: Client, auth: Callable[..., dict[str, str]]
) -> None:
    customer, admin = auth(), auth("admin")
    for order in ("keep", "drop", "back", "open"):
        await client.post("/authorize", json=auth_body(order, 1000), headers=customer)
    assert (await client.post("/keep/capture", headers=customer)).status_code == 403
    for _ in range(2):
        assert (await client.post("/keep/capture", headers=admin)).json()["status"] == "captured"
        assert (await client.post("/drop/void", headers=customer)).json()["status"] == "voided"
    await client.post("/back/capture", headers=admin)
    assert (await client.post("/back/refund", headers=admin)).json()["status"] == "refunded"
    assert (await client.post("/keep/void", headers=customer)).status_code == 409
    assert (await client.post("/drop/capture", headers=admin)).status_code == 409
    assert (await client.post("/nope/void", headers=customer)).status_code == 404
    report = (await client.get("/ledger/reconciliation", headers=admin)).json()
    assert report == {
        "consistent": True,
        "held_cents": 1000,  # "open" is still authorized
        "settled_cents": 1000,  # "keep"; "back" was refunded
        "payments_by_status": {"captured": 1, "voided": 1, "refunded": 1, "authorized": 1},
        "mismatches": [],
    }
    assert (await client.get("/ledger/reconciliation", headers=customer)).status_code == 403


async def test_order_confirmed_captures(
    client: Client, auth: Callable[..., dict[str, str]]
) -> None:
    customer = auth()
    await client.post("/authorize", json=auth_body("o-7", 1999), headers=customer)
    event = new_event(
        OrderConfirmedV1(
            order_id="o-7",
            user_id="u",
            total_cents=1999,
            payment_id="p",
            items=[OrderItem(product_id="p1", quantity=1, unit_price_cents=1999)],
        )
    )
    async with client.app.state.events.session_maker() as session, session.begin():
        await on_order_confirmed(session, event)
    assert (await client.get("/o-7", headers=customer)).json()["status"] == "captured"


async def test_the_providers_call_holds_no_database_connection(
    tmp_path: Path, keys: KeyFiles, auth: Callable[..., dict[str, str]]
) -> None:
    """On SQLite the service has one writer connection: an authorization waiting for the
    provider must not keep every other write waiting behind it."""
    system = build_system(tmp_path, only=("users", "payments"), keys=keys)
    app = system.apps["payments"]
    customer = auth()
    entered, gate = asyncio.Event(), asyncio.Event()
    async with running(system):

        async def hold(order_id: str) -> None:
            if order_id == "slow":
                entered.set()
                await gate.wait()

        app.state.provider = HeldProvider(app.state.provider, hold)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://p") as http:
            slow = asyncio.create_task(
                http.post("/authorize", json=auth_body("slow"), headers=customer)
            )
            try:
                await asyncio.wait_for(entered.wait(), 10)
                fast = await asyncio.wait_for(
                    http.post("/authorize", json=auth_body("fast"), headers=customer), 10
                )
                assert fast.status_code == 201
                assert not slow.done()
            finally:
                gate.set()
            assert (await slow).status_code == 201


async def test_two_concurrent_authorizations_of_one_order_hold_the_amount_once(
    tmp_path: Path, keys: KeyFiles, auth: Callable[..., dict[str, str]]
) -> None:
    """Both calls find no payment and ask the provider; the second insert loses on the
    order's unique payment and that call answers as the winner did."""
    system = build_system(tmp_path, only=("users", "payments"), keys=keys)
    app = system.apps["payments"]
    customer, admin = auth(), auth("admin")
    waiting: list[asyncio.Event] = []
    both = asyncio.Event()
    async with running(system):

        async def hold(_order_id: str) -> None:
            waiting.append(asyncio.Event())
            if len(waiting) == 2:
                both.set()
            await both.wait()

        app.state.provider = HeldProvider(app.state.provider, hold)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://p") as http:
            answers = await asyncio.wait_for(
                asyncio.gather(
                    *(
                        http.post("/authorize", json=auth_body("twice", 700), headers=customer)
                        for _ in range(2)
                    )
                ),
                10,
            )
            report = (await http.get("/ledger/reconciliation", headers=admin)).json()
    assert sorted(a.status_code for a in answers) == [200, 201]
    assert answers[0].json() == answers[1].json()
    assert len(waiting) == 2  # both reached the provider: the insert decided
    assert report["payments_by_status"] == {"authorized": 1}
    assert (report["held_cents"], report["consistent"]) == (700, True)
