"""The invariant checker on hand-made snapshots: silent on a consistent system, and
naming the entity, the expectation and the value for each kind of broken one."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from harness.client import (
    HistoryEntry,
    Notification,
    Order,
    OrderLine,
    Payment,
    Product,
    StockLevels,
    Summary,
)
from harness.invariants import INVARIANTS, Scope, Snapshot, check

LAMP = "0193a000-0000-7000-8000-000000000001"


def order(oid: str, status: str, qty: int = 1, reason: str | None = None) -> Order:
    return Order(
        order_id=oid,
        user_id="u1",
        status=status,
        total_cents=1500 * qty,
        items=[OrderLine(LAMP, qty, 1500)],
        version={"CONFIRMED": 4, "CANCELLED": 4}.get(status, 1),
        reason=reason,
    )


def history(o: Order) -> list[HistoryEntry]:
    types = {
        "CONFIRMED": ["placed", "stock_reserved", "payment_authorized", "confirmed"],
        "CANCELLED": ["placed", "compensation_started", "stock_released", "cancelled"],
    }.get(o.status, ["placed"])
    data: dict[str, dict[str, Any]] = {
        "placed": {"total_cents": o.total_cents},
        "compensation_started": {"reason": o.reason, "step": "authorize"},
    }
    return [
        HistoryEntry(i + 1, t, data.get(t, {}), "2026-11-29T00:00:00") for i, t in enumerate(types)
    ]


def notification(o: Order, event_type: str, n: int) -> Notification:
    verb = event_type.removeprefix("order.")
    subject = f"Order {o.order_id} {verb}" + (": 15.00" if verb == "confirmed" else "")
    return Notification("u1", f"ev-{o.order_id}-{n}", event_type, subject)


def consistent() -> Snapshot:
    good = order("o-1", "CONFIRMED", qty=2)
    bad = order("o-2", "CANCELLED", reason="card_declined")
    orders = [good, bad]
    return Snapshot(
        orders=orders,
        products=[Product(LAMP, "LAMP", "Lamp", 1500, StockLevels(3, 0, 2, 5))],
        payments={"o-1": Payment("o-1", 3000, "captured"), "o-2": Payment("o-2", 1500, "declined")},
        notifications=[
            notification(good, "order.placed", 1),
            notification(good, "order.confirmed", 2),
            notification(bad, "order.placed", 3),
            notification(bad, "order.cancelled", 4),
        ],
        summary=Summary(2, 1, 1, 3000, 3000, {"card_declined": 1}, {}),
        reconciliation={"consistent": True, "mismatches": []},
        histories={o.order_id: history(o) for o in orders},
    )


def test_a_consistent_system_has_no_violation() -> None:
    report = check(consistent())
    assert report.ok, report.render()
    assert report.checked == {"orders": 2, "products": 1, "notifications": 4}
    assert "every invariant holds" in report.render()
    report.assert_ok()


def broken(**changes: Any) -> list[str]:
    return [str(v) for v in check(replace(consistent(), **changes)).violations]


def test_an_order_left_pending_is_reported() -> None:
    s = consistent()
    stuck = order("o-3", "AUTHORIZED")
    found = [str(v) for v in INVARIANTS["orders-terminal"](replace(s, orders=[*s.orders, stuck]))]
    assert found == ["[orders-terminal] order o-3: expected CONFIRMED or CANCELLED, got AUTHORIZED"]


@pytest.mark.parametrize(
    ("stock", "expected"),
    [
        (StockLevels(2, 1, 2, 5), "reserved = 0 at rest, got 1"),
        (StockLevels(4, 0, 2, 5), "available + reserved + sold = received (5), got 4 + 0 + 2 = 6"),
        (StockLevels(4, 0, 1, 5), "sold = units in confirmed orders (2), got 1"),
        (StockLevels(-1, 0, 2, 1), "available >= 0, got -1"),
    ],
)
def test_stock_that_is_not_conserved_is_reported(stock: StockLevels, expected: str) -> None:
    product = Product(LAMP, "LAMP", "Lamp", 1500, stock)
    found = broken(products=[product])
    assert any(
        expected in v and v.startswith(f"[stock-conserved] product {LAMP}") for v in found
    ), found


def test_a_confirmed_order_without_capture_and_a_cancelled_one_captured_are_reported() -> None:
    found = broken(
        payments={
            "o-1": Payment("o-1", 3000, "authorized"),
            "o-2": Payment("o-2", 1500, "captured"),
        }
    )
    assert (
        "[payments-match] order o-1 (CONFIRMED): expected one captured payment, got authorized"
        in found
    )
    assert (
        "[payments-match] order o-2 (CANCELLED): "
        "expected no payment, declined or voided, got captured" in found
    )
    assert any(
        "captured 3000, got captured 2999" in v
        for v in broken(payments={"o-1": Payment("o-1", 2999, "captured"), "o-2": None})
    )


def test_an_inconsistent_ledger_is_reported() -> None:
    found = broken(
        reconciliation={"consistent": False, "mismatches": ["order o-1 (captured): held 0"]}
    )
    assert found == [
        "[payments-match] payments ledger: expected consistent with the statuses, "
        "got order o-1 (captured): held 0"
    ]


def test_a_missing_or_duplicate_notification_is_reported() -> None:
    s = consistent()
    doubled = [*s.notifications, notification(s.orders[0], "order.confirmed", 9)]
    assert broken(notifications=doubled) == [
        "[notifications-once] order o-1 (CONFIRMED): expected order.confirmed x1, order.placed x1, "
        "got order.confirmed x2, order.placed x1"
    ]
    missing = broken(notifications=s.notifications[1:])
    assert missing == [
        "[notifications-once] order o-1 (CONFIRMED): expected order.confirmed x1, order.placed x1, "
        "got order.confirmed x1"
    ]
    same_event = [*s.notifications, s.notifications[0]]
    assert any(
        "[notifications-once] event ev-o-1-1: expected one notification" in v
        for v in broken(notifications=same_event)
    )


def test_analytics_that_disagree_with_the_orders_are_reported() -> None:
    found = broken(summary=Summary(2, 1, 1, 4500, 3000, {"out_of_stock": 1}, {}))
    assert "[analytics-agrees] summary.revenue_cents: expected 3000, got 4500" in found
    assert any(v.startswith("[analytics-agrees] summary.cancellations_by_reason") for v in found)


def test_a_history_that_does_not_replay_to_the_read_model_is_reported() -> None:
    s = consistent()
    wrong = dict(s.histories)
    wrong["o-1"] = s.histories["o-1"][:3]  # the confirmed event is missing
    found = broken(histories=wrong)
    assert "[history-replays] order o-1: expected 4 events (read model version), got 3" in found
    assert (
        "[history-replays] order o-1: "
        "expected status CONFIRMED from the events, got fold gives None" in found
    )


def test_unknown_invariant_names_are_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown invariant"):
        check(consistent(), ["stock-conserved", "nope"])


def test_a_report_renders_at_most_its_limit() -> None:
    s = consistent()
    stuck = [order(f"o-{i}", "PLACED") for i in range(50)]
    report = check(replace(s, orders=stuck), ["orders-terminal"])
    assert not report.ok
    assert "... and 10 more" in report.render(limit=40)
    with pytest.raises(AssertionError, match="50 invariant violation"):
        report.assert_ok()


def test_a_scoped_check_skips_whole_system_invariants_only() -> None:
    s = replace(consistent(), summary=Summary(9, 9, 9, 1, 1, {}, {}))
    assert not check(s).ok
    scoped = replace(s, scope=Scope(frozenset({"o-1", "o-2"}), frozenset({LAMP})))
    assert check(scoped).ok, check(scoped).render()
    stuck = replace(scoped, orders=[*s.orders, order("o-3", "PLACED")])
    assert {v.invariant for v in check(stuck).violations} == {
        "orders-terminal",
        "notifications-once",
        "history-replays",  # no history was read for o-3 either
    }
