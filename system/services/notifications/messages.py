"""What each event says to its user: plain subject and body templates (no I/O)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from system.events.schemas import (
    Event,
    OrderCancelledV1,
    OrderConfirmedV1,
    OrderItem,
    OrderPlacedV1,
    UserRegisteredV1,
)


@dataclass(frozen=True)
class Message:
    user_id: str
    subject: str
    body: str


def money(cents: int) -> str:
    """``1999`` → ``"19.99"``."""
    return f"{cents // 100}.{cents % 100:02d}"


def _units(items: Sequence[OrderItem]) -> str:
    count = sum(item.quantity for item in items)
    return f"{count} item{'' if count == 1 else 's'}"


def welcome(data: UserRegisteredV1) -> Message:
    return Message(data.user_id, "Welcome", f"Welcome, {data.email}! Your account is ready.")


def placed(data: OrderPlacedV1) -> Message:
    return Message(
        data.user_id,
        f"Order {data.order_id} received",
        f"We received your order {data.order_id} ({_units(data.items)}, "
        f"{money(data.total_cents)}). We will confirm it shortly.",
    )


def confirmed(data: OrderConfirmedV1) -> Message:
    return Message(
        data.user_id,
        f"Order {data.order_id} confirmed: {money(data.total_cents)}",
        f"Your order {data.order_id} ({_units(data.items)}) is confirmed and paid: "
        f"{money(data.total_cents)}.",
    )


def cancelled(data: OrderCancelledV1) -> Message:
    return Message(
        data.user_id,
        f"Order {data.order_id} cancelled",
        f"Your order {data.order_id} was cancelled ({data.reason or 'no reason given'}). "
        "You have not been charged.",
    )


TEMPLATES: Mapping[str, Callable[[Any], Message]] = {
    "user.registered": welcome,
    "order.placed": placed,
    "order.confirmed": confirmed,
    "order.cancelled": cancelled,
}
"""Event type → the message it produces."""


def message_for(event: Event[Any]) -> Message | None:
    template = TEMPLATES.get(event.type)
    return None if template is None else template(event.data)
