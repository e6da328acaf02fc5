"""The projection as pure functions (no I/O), shared by the live consumer and the rebuild.

:func:`fact_of` decides what one event counts as; :func:`fold` adds it to a
:class:`Projection` (at most once per event id); :func:`summarize` turns facts into the
:class:`Summary` the API answers with, through the same :func:`summary_of` that the
database's aggregate queries feed.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from msgspec import Struct

from system.events.schemas import Event

COUNTED = (
    "user.registered",
    "order.placed",
    "order.confirmed",
    "order.cancelled",
    "payment.authorized",
    "payment.captured",
    "payment.voided",
    "stock.reserved",
    "stock.released",
    "stock.committed",
)
"""The event types the projection counts: every type of the four event topics (not the
catalog's prices on ``products.catalog``: state, not activity)."""

AMOUNTS = {
    "order.placed": "total_cents",
    "order.confirmed": "total_cents",
    "payment.authorized": "amount_cents",
    "payment.captured": "amount_cents",
    "payment.voided": "amount_cents",
}
"""Event type → the payload field that is its amount of money."""


@dataclass(frozen=True)
class Fact:
    """What one event contributes: a deterministic function of the event."""

    event_id: uuid.UUID
    event_type: str
    minute: datetime
    amount_cents: int = 0
    reason: str | None = None


def minute_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def fact_of(event: Event[Any]) -> Fact | None:
    """The fact an event adds to the projection (``None``: it counts for nothing)."""
    if event.type not in COUNTED:
        return None
    amount = AMOUNTS.get(event.type)
    return Fact(
        event_id=event.id,
        event_type=event.type,
        minute=minute_of(event.occurred_at),
        amount_cents=int(getattr(event.data, amount)) if amount else 0,
        reason=str(event.data.reason) if event.type == "order.cancelled" else None,
    )


@dataclass
class Projection:
    """The state a fold builds: every event id seen, and the fact of each counted one."""

    seen: set[uuid.UUID] = field(default_factory=set)
    facts: dict[uuid.UUID, Fact] = field(default_factory=dict)


def fold(state: Projection, event: Event[Any]) -> Projection:
    """Add one event; a second delivery of the same event id changes nothing."""
    if event.id in state.seen:
        return state
    state.seen.add(event.id)
    fact = fact_of(event)
    if fact is not None:
        state.facts[event.id] = fact
    return state


def fold_all(events: Iterable[Event[Any]], state: Projection | None = None) -> Projection:
    state = Projection() if state is None else state
    for event in events:
        fold(state, event)
    return state


# -- the summary -------------------------------------------------------------------------
class MinuteCount(Struct):
    minute: datetime
    orders: int


class Summary(Struct):
    users_registered: int
    orders_placed: int
    orders_confirmed: int
    orders_cancelled: int
    revenue_cents: int
    """Sum of the totals of confirmed orders."""
    captured_cents: int
    """Sum of the captured payments."""
    cancellations_by_reason: dict[str, int]
    orders_per_minute: list[MinuteCount]
    """Orders placed per minute of their ``occurred_at`` (UTC), oldest first."""
    events_by_type: dict[str, int]


def summary_of(
    counts: Mapping[str, int],
    sums: Mapping[str, int],
    reasons: Mapping[str, int],
    per_minute: Mapping[datetime, int],
) -> Summary:
    """The summary from aggregates: per type count and amount sum, cancellations per
    reason, orders placed per minute."""
    return Summary(
        users_registered=counts.get("user.registered", 0),
        orders_placed=counts.get("order.placed", 0),
        orders_confirmed=counts.get("order.confirmed", 0),
        orders_cancelled=counts.get("order.cancelled", 0),
        revenue_cents=sums.get("order.confirmed", 0),
        captured_cents=sums.get("payment.captured", 0),
        cancellations_by_reason=dict(sorted(reasons.items())),
        orders_per_minute=[MinuteCount(m, n) for m, n in sorted(per_minute.items())],
        events_by_type=dict(sorted((t, n) for t, n in counts.items() if n)),
    )


def summarize(facts: Iterable[Fact]) -> Summary:
    """The summary of a set of facts, computed in memory."""
    counts: Counter[str] = Counter()
    sums: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    per_minute: Counter[datetime] = Counter()
    for fact in facts:
        counts[fact.event_type] += 1
        sums[fact.event_type] += fact.amount_cents
        if fact.event_type == "order.cancelled":
            reasons[fact.reason or ""] += 1
        elif fact.event_type == "order.placed":
            per_minute[fact.minute] += 1
    return summary_of(counts, sums, reasons, per_minute)
