"""The order aggregate: its events, its state as their fold, and what the saga does next.

Pure functions, no I/O: the store persists events, the saga executes actions.

    placed ──reserve──► stock_reserved ──authorize──► payment_authorized ──► confirmed
       │                    │                               │
       └────── compensation_started(reason, step) ◄─────────┘   (any failure)
                     │ release stock (if reserve was tried), void (if authorize was tried)
                     ▼
                 cancelled(reason)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    PLACED = "PLACED"
    RESERVED = "RESERVED"
    AUTHORIZED = "AUTHORIZED"
    CONFIRMED = "CONFIRMED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"


TERMINAL = frozenset({Status.CONFIRMED, Status.CANCELLED})


class Action(StrEnum):
    RESERVE = "reserve"
    AUTHORIZE = "authorize"
    CONFIRM = "confirm"
    RELEASE = "release"
    VOID = "void"
    CANCEL = "cancel"


class InvalidTransition(Exception):
    pass


@dataclass(frozen=True)
class DomainEvent:
    """One stored fact about an order; ``data`` is its JSON body."""

    type: str
    data: dict[str, Any]
    occurred_at: datetime


@dataclass(frozen=True)
class OrderState:
    order_id: str
    version: int = 0
    status: Status | None = None
    user_id: str = ""
    items: tuple[dict[str, Any], ...] = ()
    total_cents: int = 0
    card_token: str = ""
    trace: dict[str, str] = field(default_factory=dict)
    payment_id: str | None = None
    reason: str | None = None
    failed_step: str | None = None
    released: bool = False
    voided: bool = False
    placed_at: datetime | None = None
    updated_at: datetime | None = None


def apply(state: OrderState, event: DomainEvent) -> OrderState:
    """The next state; raises :class:`InvalidTransition` for an event that cannot follow."""
    d, t = event.data, event.type
    changes: dict[str, Any]  # one ``replace`` per event (each copies every field)
    if t == "placed" and state.status is None:
        changes = {
            "status": Status.PLACED,
            "user_id": d["user_id"],
            "items": tuple(d["items"]),
            "total_cents": d["total_cents"],
            "card_token": d["card_token"],
            "trace": dict(d.get("trace", {})),
            "placed_at": event.occurred_at,
        }
    elif t == "stock_reserved" and state.status is Status.PLACED:
        changes = {"status": Status.RESERVED}
    elif t == "payment_authorized" and state.status is Status.RESERVED:
        changes = {"status": Status.AUTHORIZED, "payment_id": d["payment_id"]}
    elif t == "confirmed" and state.status is Status.AUTHORIZED:
        changes = {"status": Status.CONFIRMED}
    elif t == "compensation_started" and state.status in (
        Status.PLACED,
        Status.RESERVED,
        Status.AUTHORIZED,
    ):
        changes = {"status": Status.CANCELLING, "reason": d["reason"], "failed_step": d["step"]}
    elif t == "stock_released" and state.status is Status.CANCELLING:
        changes = {"released": True}
    elif t == "payment_voided" and state.status is Status.CANCELLING:
        changes = {"voided": True}
    elif t == "cancelled" and state.status is Status.CANCELLING:
        changes = {"status": Status.CANCELLED}
    else:
        raise InvalidTransition(f"{t} cannot follow {state.status} (order {state.order_id})")
    return replace(state, **changes, version=state.version + 1, updated_at=event.occurred_at)


def fold(order_id: str, events: list[DomainEvent]) -> OrderState:
    state = OrderState(order_id)
    for event in events:
        state = apply(state, event)
    return state


_TRIED = {  # the step that failed → the side effects that may have happened
    Action.RESERVE: {Action.RELEASE},
    Action.AUTHORIZE: {Action.RELEASE, Action.VOID},
    Action.CONFIRM: {Action.RELEASE, Action.VOID},
}


_FORWARD = {
    Status.PLACED: Action.RESERVE,
    Status.RESERVED: Action.AUTHORIZE,
    Status.AUTHORIZED: Action.CONFIRM,
}


def next_action(state: OrderState) -> Action | None:
    """What the saga does next for ``state``; ``None`` when the order is terminal."""
    if state.status in _FORWARD:
        return _FORWARD[state.status]
    if state.status is not Status.CANCELLING:
        return None
    undo = _TRIED.get(Action(state.failed_step), set()) if state.failed_step else set()
    if Action.RELEASE in undo and not state.released:
        return Action.RELEASE
    if Action.VOID in undo and not state.voided:
        return Action.VOID
    return Action.CANCEL
