"""The event store: load an order (fold of its events), append with optimistic
concurrency, and in the same transaction rewrite the read model and stage the public
events (``order.placed``, ``order.confirmed``, ``order.cancelled``) in the outbox."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from system.chassis.outbox import stage
from system.events.schemas import (
    OrderCancelledV1,
    OrderConfirmedV1,
    OrderItem,
    OrderPlacedV1,
    new_event,
)
from system.services.orders.aggregate import DomainEvent, OrderState, Status, apply, fold
from system.services.orders.models import OrderEvent, OrderView


class ConcurrencyConflict(Exception):
    """Someone appended to the order since it was loaded."""


class UnknownOrder(Exception):
    pass


async def history(session: AsyncSession, order_id: str) -> list[DomainEvent]:
    rows = await session.scalars(
        select(OrderEvent).where(OrderEvent.order_id == order_id).order_by(OrderEvent.version)
    )
    return [DomainEvent(r.type, r.data, r.occurred_at) for r in rows]


async def load(session: AsyncSession, order_id: str) -> OrderState:
    events = await history(session, order_id)
    if not events:
        raise UnknownOrder(order_id)
    return fold(order_id, events)


def event(type_: str, **data: Any) -> DomainEvent:
    return DomainEvent(type_, data, datetime.now(UTC))


async def append(
    session: AsyncSession, state: OrderState, events: Sequence[DomainEvent]
) -> OrderState:
    """Append ``events`` after ``state.version``; :class:`ConcurrencyConflict` if the
    stream moved. The caller commits."""
    new_state = state
    for item in events:
        new_state = apply(new_state, item)
        session.add(
            OrderEvent(
                order_id=state.order_id,
                version=new_state.version,
                type=item.type,
                data=item.data,
                occurred_at=item.occurred_at,
            )
        )
        _publish(session, new_state, item)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise ConcurrencyConflict(state.order_id) from exc
    await _project(session, new_state)
    return new_state


def _items(state: OrderState) -> list[OrderItem]:
    return [
        OrderItem(
            product_id=i["product_id"],
            quantity=i["quantity"],
            unit_price_cents=i["unit_price_cents"],
        )
        for i in state.items
    ]


def _publish(session: AsyncSession, state: OrderState, item: DomainEvent) -> None:
    if item.type == "placed":
        stage(
            session,
            new_event(
                OrderPlacedV1(
                    order_id=state.order_id,
                    user_id=state.user_id,
                    items=_items(state),
                    total_cents=state.total_cents,
                )
            ),
        )
    elif item.type == "confirmed":
        stage(
            session,
            new_event(
                OrderConfirmedV1(
                    order_id=state.order_id,
                    user_id=state.user_id,
                    items=_items(state),
                    total_cents=state.total_cents,
                    payment_id=state.payment_id or "",
                )
            ),
        )
    elif item.type == "cancelled":
        stage(
            session,
            new_event(
                OrderCancelledV1(
                    order_id=state.order_id,
                    user_id=state.user_id,
                    items=_items(state),
                    reason=state.reason or "unknown",
                )
            ),
        )


async def _project(session: AsyncSession, state: OrderState) -> None:
    """The read model follows the stream in the same transaction (CQRS, synchronous)."""
    view = await session.scalar(select(OrderView).where(OrderView.order_id == state.order_id))
    if state.status is None or state.placed_at is None or state.updated_at is None:
        raise ValueError(f"order {state.order_id} has no placed event to project")
    if view is None:
        view = OrderView(order_id=state.order_id, placed_at=state.placed_at)
        session.add(view)
    view.user_id = state.user_id
    view.status = state.status.value
    view.total_cents = state.total_cents
    view.items = list(state.items)
    view.reason = state.reason if state.status in (Status.CANCELLING, Status.CANCELLED) else None
    view.payment_id = state.payment_id
    view.version = state.version
    view.updated_at = state.updated_at
    await session.flush()
