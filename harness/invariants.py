"""Business invariants, checked after quiescence through the services' public read APIs.

A Jepsen-style oracle: whatever faults a scenario injected, once the system is at rest
these must hold. :meth:`Snapshot.read` reads everything once (as the admin); each
invariant is a pure function ``Snapshot -> violations`` registered in :data:`INVARIANTS`,
so it is unit-tested on hand-made snapshots and new ones are one decorated function.

* ``orders-terminal``     every order CONFIRMED or CANCELLED
* ``stock-conserved``     per product: no counter negative; available + reserved + sold =
                          received; reserved = 0 at rest; sold = units of confirmed orders
* ``payments-match``      a confirmed order has one captured payment of its total; a
                          cancelled one none, or declined / voided; the ledger reconciles
* ``notifications-once``  one ``order.placed`` and one terminal notification per order,
                          none of the other outcome
* ``analytics-agrees``    the analytics projection's counts and revenue = the orders'
* ``history-replays``     each order's event history folds to what the read model says

:func:`settle` re-reads until every invariant holds or the deadline passes (events are
relayed asynchronously), then returns the last report: a readable list of violations.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.client import Api, HistoryEntry, Notification, Order, Payment, Product, Summary


@dataclass(frozen=True)
class Violation:
    invariant: str
    entity: str
    expected: str
    actual: str

    def __str__(self) -> str:
        return f"[{self.invariant}] {self.entity}: expected {self.expected}, got {self.actual}"


@dataclass(frozen=True)
class Scope:
    """Only these orders and products: a scenario's own, checked while other tests run.
    Invariants about the whole system (analytics totals) are skipped in a scoped check."""

    orders: frozenset[str]
    products: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Snapshot:
    """What the public APIs say, read once."""

    orders: Sequence[Order]
    products: Sequence[Product]
    payments: dict[str, Payment | None]
    """order id → its payment (``None``: payments has none)."""
    notifications: Sequence[Notification]
    summary: Summary
    reconciliation: dict[str, Any]
    histories: dict[str, list[HistoryEntry]]

    scope: Scope | None = None

    @classmethod
    async def read(
        cls, admin: Api, *, scope: Scope | None = None, concurrency: int = 16
    ) -> Snapshot:
        orders, products, notifications, summary, reconciliation = await asyncio.gather(
            admin.orders(),
            admin.products(),
            admin.notifications(),
            admin.summary(),
            admin.reconciliation(),
        )
        if scope is not None:
            orders = [o for o in orders if o.order_id in scope.orders]
            products = [p for p in products if p.id in scope.products]
        gate = asyncio.Semaphore(concurrency)

        async def per_order(order: Order) -> tuple[Payment | None, list[HistoryEntry]]:
            async with gate:
                return await asyncio.gather(
                    admin.payment(order.order_id), admin.history(order.order_id)
                )

        details = await asyncio.gather(*(per_order(o) for o in orders))
        return cls(
            orders=orders,
            products=products,
            payments={o.order_id: d[0] for o, d in zip(orders, details, strict=True)},
            notifications=notifications,
            summary=summary,
            reconciliation=reconciliation,
            histories={o.order_id: d[1] for o, d in zip(orders, details, strict=True)},
            scope=scope,
        )

    def confirmed(self) -> Iterator[Order]:
        return (o for o in self.orders if o.status == "CONFIRMED")


Check = Callable[[Snapshot], Iterable[Violation]]
INVARIANTS: dict[str, Check] = {}
WHOLE_SYSTEM: set[str] = set()
"""Invariants that only make sense over every order (skipped in a scoped check)."""


def invariant(name: str, *, whole_system: bool = False) -> Callable[[Check], Check]:
    def register(check: Check) -> Check:
        INVARIANTS[name] = check
        if whole_system:
            WHOLE_SYSTEM.add(name)
        return check

    return register


@invariant("orders-terminal")
def orders_terminal(s: Snapshot) -> Iterator[Violation]:
    for o in s.orders:
        if not o.terminal:
            yield Violation(
                "orders-terminal", f"order {o.order_id}", "CONFIRMED or CANCELLED", o.status
            )


@invariant("stock-conserved")
def stock_conserved(s: Snapshot) -> Iterator[Violation]:
    sold_by_orders: Counter[str] = Counter()
    for o in s.confirmed():
        for line in o.items:
            sold_by_orders[line.product_id] += line.quantity
    for p in s.products:
        entity, st = f"product {p.id} ({p.sku})", p.stock
        name = "stock-conserved"
        for counter in ("available", "reserved", "sold"):
            if getattr(st, counter) < 0:
                yield Violation(name, entity, f"{counter} >= 0", str(getattr(st, counter)))
        if st.available + st.reserved + st.sold != st.received:
            yield Violation(
                name,
                entity,
                f"available + reserved + sold = received ({st.received})",
                f"{st.available} + {st.reserved} + {st.sold} = "
                f"{st.available + st.reserved + st.sold}",
            )
        if st.reserved != 0:
            yield Violation(name, entity, "reserved = 0 at rest", str(st.reserved))
        if st.sold != sold_by_orders[p.id]:
            yield Violation(
                name,
                entity,
                f"sold = units in confirmed orders ({sold_by_orders[p.id]})",
                str(st.sold),
            )


@invariant("payments-match")
def payments_match(s: Snapshot) -> Iterator[Violation]:
    name = "payments-match"
    for o in s.orders:
        payment, entity = s.payments.get(o.order_id), f"order {o.order_id} ({o.status})"
        if o.status == "CONFIRMED":
            if payment is None or payment.status != "captured":
                got = "no payment" if payment is None else payment.status
                yield Violation(name, entity, "one captured payment", got)
            elif payment.amount_cents != o.total_cents:
                yield Violation(
                    name, entity, f"captured {o.total_cents}", f"captured {payment.amount_cents}"
                )
        elif (
            o.status == "CANCELLED"
            and payment is not None
            and payment.status not in ("declined", "voided")
        ):
            yield Violation(name, entity, "no payment, declined or voided", payment.status)
    if not s.reconciliation.get("consistent", False):
        mismatches = "; ".join(s.reconciliation.get("mismatches", [])[:5])
        yield Violation(name, "payments ledger", "consistent with the statuses", mismatches)


_ORDER_IN_SUBJECT = re.compile(r"^Order (\S+?):? ")


@invariant("notifications-once")
def notifications_once(s: Snapshot) -> Iterator[Violation]:
    name = "notifications-once"
    seen: dict[str, Counter[str]] = defaultdict(Counter)
    for n in s.notifications:
        match = _ORDER_IN_SUBJECT.match(n.subject)
        if match and n.event_type.startswith("order."):
            seen[match.group(1)][n.event_type] += 1
    duplicates = [e for e, c in Counter(n.event_id for n in s.notifications).items() if c > 1]
    for event_id in duplicates:
        yield Violation(name, f"event {event_id}", "one notification", "several")
    outcome = {"CONFIRMED": "order.confirmed", "CANCELLED": "order.cancelled"}
    for o in s.orders:
        got = seen[o.order_id]
        want = Counter({"order.placed": 1})
        if o.status in outcome:
            want[outcome[o.status]] = 1
        if +got != want:
            yield Violation(name, f"order {o.order_id} ({o.status})", _counts(want), _counts(got))


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{k} x{v}" for k, v in sorted(counter.items()) if v) or "none"


@invariant("analytics-agrees", whole_system=True)
def analytics_agrees(s: Snapshot) -> Iterator[Violation]:
    name, summary = "analytics-agrees", s.summary
    confirmed = list(s.confirmed())
    cancelled = [o for o in s.orders if o.status == "CANCELLED"]
    revenue = sum(o.total_cents for o in confirmed)
    expected = {
        "orders_placed": len(s.orders),
        "orders_confirmed": len(confirmed),
        "orders_cancelled": len(cancelled),
        "revenue_cents": revenue,
        "captured_cents": revenue,
    }
    for key, want in expected.items():
        got = getattr(summary, key)
        if got != want:
            yield Violation(name, f"summary.{key}", str(want), str(got))
    reasons = Counter(o.reason or "" for o in cancelled)
    if dict(reasons) != {k: v for k, v in summary.cancellations_by_reason.items() if v}:
        yield Violation(
            name,
            "summary.cancellations_by_reason",
            str(dict(reasons)),
            str(summary.cancellations_by_reason),
        )


_TERMINAL_EVENT = {"confirmed": "CONFIRMED", "cancelled": "CANCELLED"}


@invariant("history-replays")
def history_replays(s: Snapshot) -> Iterator[Violation]:
    name = "history-replays"
    for o in s.orders:
        history, entity = s.histories.get(o.order_id, []), f"order {o.order_id}"
        if [h.version for h in history] != list(range(1, len(history) + 1)):
            yield Violation(
                name, entity, "versions 1..n without gaps", str([h.version for h in history])
            )
        if len(history) != o.version:
            yield Violation(
                name, entity, f"{o.version} events (read model version)", str(len(history))
            )
        if not history or history[0].type != "placed":
            yield Violation(
                name,
                entity,
                "history starting with placed",
                history[0].type if history else "empty",
            )
            continue
        total = history[0].data.get("total_cents")
        if total != o.total_cents:
            yield Violation(name, entity, f"total {total} (placed event)", f"total {o.total_cents}")
        folded = next((_TERMINAL_EVENT[h.type] for h in history if h.type in _TERMINAL_EVENT), None)
        if o.terminal and folded != o.status:
            yield Violation(
                name, entity, f"status {o.status} from the events", f"fold gives {folded}"
            )
        reason = next(
            (h.data.get("reason") for h in history if h.type == "compensation_started"), None
        )
        if o.status == "CANCELLED" and reason != o.reason:
            yield Violation(name, entity, f"reason {o.reason!r}", f"events say {reason!r}")


@dataclass
class Report:
    violations: list[Violation]
    checked: dict[str, int] = field(default_factory=dict)
    """What was looked at: orders, products, notifications."""
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return not self.violations

    def render(self, limit: int = 40) -> str:
        head = ", ".join(f"{v} {k}" for k, v in self.checked.items())
        if self.ok:
            return f"every invariant holds ({head})"
        lines = [f"{len(self.violations)} invariant violation(s) ({head}):"]
        lines += [f"  {v}" for v in self.violations[:limit]]
        if len(self.violations) > limit:
            lines.append(f"  ... and {len(self.violations) - limit} more")
        return "\n".join(lines)

    def assert_ok(self) -> None:
        if not self.ok:
            raise AssertionError(self.render())


def check(snapshot: Snapshot, names: Iterable[str] | None = None) -> Report:
    """Run the named invariants (all by default) on one snapshot."""
    chosen = list(INVARIANTS) if names is None else list(names)
    unknown = [n for n in chosen if n not in INVARIANTS]
    if unknown:
        raise ValueError(f"unknown invariant(s) {unknown}; known: {sorted(INVARIANTS)}")
    if snapshot.scope is not None:
        chosen = [n for n in chosen if n not in WHOLE_SYSTEM]
    violations = [v for n in chosen for v in INVARIANTS[n](snapshot)]
    checked = {
        "orders": len(snapshot.orders),
        "products": len(snapshot.products),
        "notifications": len(snapshot.notifications),
    }
    return Report(violations, checked)


async def settle(
    admin: Api,
    *,
    within: float = 60.0,
    interval: float = 0.5,
    names: Iterable[str] | None = None,
    scope: Scope | None = None,
) -> Report:
    """Re-read and check until every invariant holds or ``within`` seconds pass; the last
    report either way (the caller asserts ``report.ok``)."""
    chosen = None if names is None else list(names)
    deadline = time.monotonic() + within
    attempts = 0
    while True:
        attempts += 1
        report = check(await Snapshot.read(admin, scope=scope), chosen)
        report.attempts = attempts
        if report.ok or time.monotonic() >= deadline:
            return report
        await asyncio.sleep(interval)
