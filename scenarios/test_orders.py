"""The order saga's promises without faults: each scenario drives the system through the
gateway as a customer, then checks its own orders and products with the invariant checker
(scoped, so the scenarios run in parallel) and, where it says something, the trace."""

from __future__ import annotations

import asyncio

import pytest

from harness.client import Api, ApiError
from harness.invariants import Scope
from harness.pytest_plugin.invariants import Settle
from harness.traces import (
    Jaeger,
    Match,
    Trace,
    assert_edges,
    assert_kafka_edge,
    assert_no_errors,
    assert_spans_in_order,
)

pytestmark = [pytest.mark.saga, pytest.mark.integration]


async def test_a_paid_order_is_confirmed_in_one_trace_across_every_service(
    admin: Api, customer: Api, jaeger: Jaeger, invariants: Settle
) -> None:
    lamp = await admin.create_product(stock=3, price_cents=1500)
    placed = await customer.place_order({lamp.id: 2})
    assert placed.location.endswith(f"/orders/{placed.order_id}")
    order = await customer.wait_terminal(placed.order_id)
    assert (order.status, order.total_cents) == ("CONFIRMED", 3000)

    def complete(trace: Trace) -> bool:  # spans arrive late: every hop has reported
        assert_edges(trace, ("orders", "products"), ("orders", "payments"), via="http")
        return all(
            assert_kafka_edge(trace, "orders", consumer)
            for consumer in ("payments", "products", "notifications", "analytics")
        )

    trace = await jaeger.wait_for_trace(placed.trace_id, until=complete, timeout=30)
    assert_spans_in_order(
        trace,
        [
            Match(service="products", name="PUT /reservations/*"),
            Match(service="payments", name="POST /authorize"),
        ],
    )
    assert_no_errors(trace)
    await invariants(scope=Scope(frozenset({order.order_id}), frozenset({lamp.id})))
    assert (await admin.product(lamp.id)).stock.sold == 2


async def test_a_declined_card_cancels_and_gives_the_stock_back(
    admin: Api, customer: Api, invariants: Settle
) -> None:
    lamp = await admin.create_product(stock=1)
    placed = await customer.place_order({lamp.id: 1}, card="tok_decline_4000")
    order = await customer.wait_terminal(placed.order_id)
    assert (order.status, order.reason) == ("CANCELLED", "card_declined")
    payment = await admin.payment(order.order_id)
    assert payment is not None
    assert payment.status == "declined"
    await invariants(scope=Scope(frozenset({order.order_id}), frozenset({lamp.id})))
    assert (await admin.product(lamp.id)).stock.available == 1


async def test_an_order_for_more_than_the_stock_cancels_without_charging(
    admin: Api, customer: Api, invariants: Settle
) -> None:
    lamp = await admin.create_product(stock=1)
    placed = await customer.place_order({lamp.id: 2})
    order = await customer.wait_terminal(placed.order_id)
    assert (order.status, order.reason) == ("CANCELLED", "out_of_stock")
    assert await admin.payment(order.order_id) is None
    await invariants(scope=Scope(frozenset({order.order_id}), frozenset({lamp.id})))


async def test_a_duplicate_submission_is_one_order_and_a_changed_one_is_refused(
    admin: Api, customer: Api, invariants: Settle
) -> None:
    lamp = await admin.create_product(stock=5)
    first = await customer.place_order({lamp.id: 1}, idempotency_key="dup-" + lamp.id)
    again = await customer.place_order({lamp.id: 1}, idempotency_key="dup-" + lamp.id)
    assert again.order_id == first.order_id
    with pytest.raises(ApiError) as changed:
        await customer.place_order({lamp.id: 2}, idempotency_key="dup-" + lamp.id)
    assert changed.value.status_code == 409
    await customer.wait_terminal(first.order_id)
    assert [o.order_id for o in await customer.orders()] == [first.order_id]
    await invariants(scope=Scope(frozenset({first.order_id}), frozenset({lamp.id})))
    assert (await admin.product(lamp.id)).stock.sold == 1


async def test_concurrent_orders_for_the_last_unit_sell_it_once(
    api: Api, admin: Api, invariants: Settle
) -> None:
    lamp = await admin.create_product(stock=1)
    buyers = await asyncio.gather(*(api.new_customer() for _ in range(6)))
    placed = await asyncio.gather(*(b.place_order({lamp.id: 1}) for b in buyers))
    orders = await asyncio.gather(
        *(b.wait_terminal(p.order_id) for b, p in zip(buyers, placed, strict=True))
    )
    outcomes = sorted((o.status, o.reason) for o in orders)
    assert outcomes == [("CANCELLED", "out_of_stock")] * 5 + [("CONFIRMED", None)]
    await invariants(scope=Scope(frozenset(o.order_id for o in orders), frozenset({lamp.id})))
