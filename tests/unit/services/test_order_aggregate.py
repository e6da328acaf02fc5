"""The order aggregate: its fold, its transitions, and what the saga does next."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from advanced_alchemy.base import orm_registry
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from system.chassis.db import create_engine
from system.services.orders import store
from system.services.orders.aggregate import (
    Action,
    DomainEvent,
    InvalidTransition,
    OrderState,
    Status,
    apply,
    fold,
    next_action,
)
from system.services.orders.models import OrderView
from system.services.orders.settings import OrdersSettings

NOW = datetime(2026, 11, 29, tzinfo=UTC)
PLACED = DomainEvent(
    "placed",
    {
        "user_id": "u",
        "items": [{"product_id": "p", "quantity": 1, "unit_price_cents": 500}],
        "total_cents": 500,
        "card_token": "tok_visa_4242",
    },
    NOW,
)


def events(*types: str, **data: dict[str, str]) -> list[DomainEvent]:
    return [PLACED, *(DomainEvent(t, data.get(t, {}), NOW) for t in types)]


def test_the_happy_path_folds_to_confirmed() -> None:
    state = fold(
        "o",
        events(
            "stock_reserved",
            "payment_authorized",
            "confirmed",
            payment_authorized={"payment_id": "pay-1"},
        ),
    )
    assert (state.status, state.version, state.payment_id) == (Status.CONFIRMED, 4, "pay-1")
    assert next_action(state) is None


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        ((), Action.RESERVE),
        (("stock_reserved",), Action.AUTHORIZE),
        (("stock_reserved", "payment_authorized"), Action.CONFIRM),
    ],
)
def test_each_forward_state_has_its_step(stream: tuple[str, ...], expected: Action) -> None:
    state = fold("o", events(*stream, payment_authorized={"payment_id": "p"}))
    assert next_action(state) is expected


@pytest.mark.parametrize(
    ("failed_at", "undo"),
    [
        ("reserve", [Action.RELEASE, Action.CANCEL]),
        ("authorize", [Action.RELEASE, Action.VOID, Action.CANCEL]),
    ],
)
def test_compensation_undoes_every_step_that_was_tried(failed_at: str, undo: list[Action]) -> None:
    reached = ["stock_reserved"] if failed_at == "authorize" else []
    state = fold("o", events(*reached))
    state = apply(
        state, DomainEvent("compensation_started", {"reason": "boom", "step": failed_at}, NOW)
    )
    assert state.status is Status.CANCELLING
    done = {
        Action.RELEASE: "stock_released",
        Action.VOID: "payment_voided",
        Action.CANCEL: "cancelled",
    }
    seen = []
    while (action := next_action(state)) is not None:
        seen.append(action)
        state = apply(state, DomainEvent(done[action], {"reason": "boom"}, NOW))
    assert seen == undo
    assert (state.status, state.reason) == (Status.CANCELLED, "boom")


@pytest.mark.parametrize(
    ("state_events", "bad"),
    [
        ((), "confirmed"),
        (("stock_reserved", "payment_authorized", "confirmed"), "compensation_started"),
        (("stock_reserved",), "stock_reserved"),
        ((), "cancelled"),
    ],
)
def test_impossible_transitions_are_refused(state_events: tuple[str, ...], bad: str) -> None:
    state = fold("o", events(*state_events, payment_authorized={"payment_id": "p"}))
    with pytest.raises(InvalidTransition):
        apply(state, DomainEvent(bad, {"reason": "x", "step": "reserve"}, NOW))


def test_nothing_can_happen_before_placed() -> None:
    with pytest.raises(InvalidTransition):
        apply(OrderState("o"), DomainEvent("stock_reserved", {}, NOW))


async def test_two_writers_from_the_same_version_cannot_both_append(tmp_path: Path) -> None:
    settings = OrdersSettings(data_dir=tmp_path, log_json=False)
    engine = create_engine(settings)
    async with engine.begin() as conn:
        await conn.run_sync(orm_registry.metadata.create_all)
    maker = async_sessionmaker(engine, expire_on_commit=False)
    try:
        async with maker() as session, session.begin():
            placed = await session.run_sync(store.append_in, OrderState("o-1"), [PLACED])
        async with maker() as session, session.begin():
            await session.run_sync(
                store.append_in, placed, [DomainEvent("stock_reserved", {}, NOW)]
            )
        async with maker() as session:
            with pytest.raises(store.ConcurrencyConflict):
                await session.run_sync(
                    store.append_in,
                    placed,
                    [DomainEvent("compensation_started", {"reason": "x", "step": "reserve"}, NOW)],
                )
        async with maker() as session:
            replayed = await store.load(session, "o-1")
            view = await session.scalar(select(OrderView).where(OrderView.order_id == "o-1"))
        assert (replayed.status, replayed.version) == (Status.RESERVED, 2)
        assert view is not None
        assert (view.status, view.version) == ("RESERVED", 2), "the read model is the replay"
    finally:
        await engine.dispose()
