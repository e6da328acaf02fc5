"""Event contracts: published schemas, producers that keep them, consumers that accept
every version they claim (never crashing, never applying one event twice), and a
compatibility check that names who a breaking change would break."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import msgspec
import pytest
from advanced_alchemy.base import orm_registry
from hypothesis import HealthCheck, given, settings
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from contracts.events import (
    EventContract,
    catalog,
    compatibility_report,
    expected_files,
    handlers_by_service,
)
from contracts.events.strategies import events
from harness.inprocess import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    Record,
    build_system,
    inbox_consumer,
    record_of,
    running,
)
from system.chassis.inbox import Outcome
from system.chassis.outbox import OutboxMessage
from system.events.schemas import EVENT_TYPES, Event, decode

pytestmark = pytest.mark.contract

CONTRACTS = {(c.type, c.version): c for c in catalog()}


def committed(contract: EventContract) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(contract.file.read_text())
    return loaded


# -- the published schemas ---------------------------------------------------------------
def test_the_committed_schemas_are_up_to_date() -> None:
    stale = [
        p.name for p, body in expected_files().items() if not p.exists() or p.read_text() != body
    ]
    assert not stale, f"stale event schemas {stale}: run `python -m contracts.events`"


@pytest.mark.parametrize("contract", CONTRACTS.values(), ids=lambda c: c.name)
def test_the_current_schema_keeps_the_committed_contract(contract: EventContract) -> None:
    report = compatibility_report(contract, committed(contract))
    assert report is None, report


def test_a_breaking_change_names_the_producer_and_every_consumer() -> None:
    contract = CONTRACTS[("order.confirmed", 1)]
    old = committed(contract)
    data = old["$defs"]["OrderConfirmedV1"]
    data["properties"]["coupon"] = {"type": "string"}  # a field the code no longer has
    data["required"] = sorted({*data["required"], "coupon"})
    data["properties"]["total_cents"] = {"type": "string"}  # the code now says integer
    report = compatibility_report(contract, old)
    assert report is not None
    assert report.startswith(
        "order.confirmed v1 changed incompatibly (producer: orders; "
        "consumers: analytics, notifications, payments, products)"
    ), report
    assert "coupon: removed" in report
    assert "total_cents: type changed from 'string' to 'integer'" in report


# -- producers ---------------------------------------------------------------------------
async def _drive(folder: Path) -> dict[str, list[OutboxMessage]]:
    """One confirmed and one declined order through the real services, a product
    withdrawn, then the order outcomes delivered to products and payments: every event
    type gets staged."""
    system = build_system(folder)
    async with running(system):
        apps: dict[str, Any] = dict(system.apps)
        http = {
            name: httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x")
            for name, app in apps.items()
        }

        async def token(email: str, password: str) -> dict[str, str]:
            login = await http["users"].post("/login", json={"email": email, "password": password})
            return {"Authorization": f"Bearer {login.json()['access_token']}"}

        await http["users"].post(
            "/register", json={"email": "c@example.test", "password": "p4ssword!"}
        )
        customer = await token("c@example.test", "p4ssword!")
        admin = await token(ADMIN_EMAIL, ADMIN_PASSWORD)
        product = await http["products"].post(
            "/",
            headers=admin,
            json={"sku": "EV-1", "name": "e", "price_cents": 500, "initial_stock": 5},
        )
        for key, card in (("order-ok-1", "tok_visa_4242"), ("order-no-1", "tok_decline_0001")):
            placed = await http["orders"].post(
                "/",
                headers={**customer, "Idempotency-Key": key},
                json={
                    "items": [{"product_id": product.json()["id"], "quantity": 1}],
                    "card_token": card,
                },
            )
            assert placed.status_code == 202, placed.text
        async with asyncio.timeout(20):
            await system.apps["orders"].state.saga.idle()
        gone = await http["products"].post(
            "/", headers=admin, json={"sku": "EV-2", "name": "g", "price_cents": 300}
        )
        withdrawn = await http["products"].delete(f"/{gone.json()['id']}", headers=admin)
        assert withdrawn.status_code == 204, withdrawn.text
        held = {"order_id": "direct-1", "amount_cents": 700, "card_token": "tok_visa_4242"}
        await http["payments"].post("/authorize", headers=admin, json=held)
        voided = await http["payments"].post("/direct-1/void", headers=admin)
        assert voided.status_code == 200, voided.text
        staged = await _outboxes(system.apps)
        for service in ("products", "payments"):
            inbox = inbox_consumer(service, system.apps[service].state.events.session_maker)
            for row in staged["orders"]:
                assert await inbox.process(Record(row.payload, row.topic)) is not Outcome.FAILED
        for client in http.values():
            await client.aclose()
        return await _outboxes(system.apps)


async def _outboxes(apps: Any) -> dict[str, list[OutboxMessage]]:
    found = {}
    for name, app in apps.items():
        async with app.state.events.session_maker() as session:
            found[name] = list(
                await session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))
            )
    return found


async def test_every_producer_emits_events_that_validate_against_their_schema(
    tmp_path: Path,
) -> None:
    staged = await _drive(tmp_path)
    seen: set[tuple[str, int]] = set()
    for service, rows in staged.items():
        for row in rows:
            contract = CONTRACTS[(row.event_type, row.event_version)]
            assert contract.producer == service, (
                f"{service} staged {contract.name}, owned by {contract.producer}"
            )
            document = json.loads(row.payload)
            errors = [
                e.message
                for e in jsonschema_rs.validator_for(committed(contract)).iter_errors(document)
            ]
            assert not errors, f"{service} emitted an invalid {contract.name}: {errors}"
            assert decode(row.payload).type == row.event_type
            seen.add((row.event_type, row.event_version))
    assert seen == set(EVENT_TYPES), f"never produced: {sorted(set(EVENT_TYPES) - seen)}"


# -- consumers ---------------------------------------------------------------------------
CLAIMS = sorted(
    (service, event_type, version)
    for service, types in handlers_by_service().items()
    for event_type, version in EVENT_TYPES
    if event_type in types
)
"""A handler keyed by type claims every registered version of it."""


class Bench:
    """One consumer on its own SQLite file, driven from a synchronous test."""

    def __init__(self, folder: Path, service: str) -> None:
        self.runner = asyncio.Runner()
        self.engine = create_async_engine(f"sqlite+aiosqlite:///{folder / service}.db")
        self.consumer = inbox_consumer(
            service, async_sessionmaker(self.engine, expire_on_commit=False)
        )
        self.runner.run(self._create())

    async def _create(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(orm_registry.metadata.create_all)

    def process(self, event: Event[Any]) -> Outcome:
        return self.runner.run(self.consumer.process(record_of(event)))

    def effects(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table but the inbox: what the events did."""

        async def dump() -> dict[str, list[tuple[Any, ...]]]:
            async with self.engine.connect() as conn:
                return {
                    t.name: sorted(map(tuple, await conn.execute(select(t))), key=repr)
                    for t in orm_registry.metadata.sorted_tables
                    if t.name != "inbox"
                }

        return self.runner.run(dump())

    def close(self) -> None:
        self.runner.run(self.engine.dispose())
        self.runner.close()


@pytest.fixture
def bench(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Bench]:
    service = request.param
    made = Bench(tmp_path, service)
    yield made
    made.close()


@pytest.mark.parametrize(
    ("bench", "event_type", "version"),
    CLAIMS,
    indirect=["bench"],
    ids=[f"{s}:{t}.v{v}" for s, t, v in CLAIMS],
)
def test_a_consumer_accepts_every_event_it_claims_and_applies_it_once(
    bench: Bench, event_type: str, version: int
) -> None:
    @settings(
        max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(generated=events(EVENT_TYPES[(event_type, version)]))
    def once(generated: Event[Any]) -> None:
        event = msgspec.structs.replace(generated, id=uuid.uuid4())  # one delivery, one id
        assert bench.process(event) is Outcome.PROCESSED
        after_first = bench.effects()
        assert bench.process(event) is Outcome.DUPLICATE
        assert bench.effects() == after_first, "a redelivered event changed the state again"

    once()
