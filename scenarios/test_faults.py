"""The saga under faults. Each scenario is destructive (it runs alone on the shared
target), injects one fault through ``faults`` (seeded, recorded, always reverted), checks
what users saw, what the metrics and traces say, and ends with the whole-system
invariant checker."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from harness.client import Api, ApiError, Order
from harness.faults import Faults
from harness.metrics import Metrics, Window, compare
from harness.pytest_plugin.invariants import Settle
from harness.target import Target
from harness.traces import Jaeger, Trace, assert_no_span
from system.runtime.state import StackSettings

pytestmark = [pytest.mark.saga, pytest.mark.fault, pytest.mark.destructive, pytest.mark.slow]


def now() -> datetime:
    return datetime.now(UTC)


async def until(check: object, description: str, *, within: float = 30.0) -> None:
    """Poll an async predicate with a deadline."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"not {description} after {within:g} s")


async def order_until_confirmed(customer: Api, product: str, *, within: float) -> Order:
    """Place orders until one is confirmed (a breaker half-opens only when called)."""
    deadline = time.monotonic() + within
    outcomes = []
    while time.monotonic() < deadline:
        placed = await customer.place_order({product: 1})
        order = await customer.wait_terminal(placed.order_id)
        if order.status == "CONFIRMED":
            return order
        outcomes.append(order.reason)
    raise AssertionError(f"no order confirmed within {within:g} s: {outcomes}")


async def test_a_slow_payments_edge_opens_the_breaker_and_orders_cancel_cleanly(
    admin: Api,
    customer: Api,
    faults: Faults,
    metrics: Metrics,
    jaeger: Jaeger,
    invariants: Settle,
) -> None:
    lamp = await admin.create_product(stock=50)
    start = now()
    async with faults.edge_delay("payments", delay_ms=3000):  # beyond the 2 s per-attempt timeout
        # the breaker counts a call that failed after its retries: more than its threshold (5)
        placed = await asyncio.gather(*(customer.place_order({lamp.id: 1}) for _ in range(8)))

        async def gave_up() -> bool:  # the void of the compensation needs payments too
            orders = [await customer.order(p.order_id) for p in placed]
            return all(o.status in ("CANCELLING", "CANCELLED") for o in orders)

        await until(gave_up, "every order compensating", within=45)
    fault_end = now()
    cancelled = await asyncio.gather(*(customer.wait_terminal(p.order_id) for p in placed))
    assert {(o.status, o.reason) for o in cancelled} == {("CANCELLED", "authorize_timeout")}

    # the breaker opened during the fault (Prometheus scrapes every 2 s: poll)
    async def opened() -> bool:
        history = metrics.breaker_state("orders", "payments", Window(start, now()))
        return history.worst == "open"

    await until(opened, "seen open in Prometheus", within=15)
    opened_at = metrics.breaker_state("orders", "payments", Window(start, now())).opened_at
    assert opened_at is not None

    # traces: calls reached the payments mesh listener before the breaker opened, none after
    async def attempts_before_opening() -> list[Trace]:
        traces = await jaeger.find_traces("mesh-payments", since=start, until=opened_at)
        return [t for t in traces if t.find(service="mesh-payments")]

    await until(attempts_before_opening, "payments attempts in Jaeger", within=30)
    margin = timedelta(seconds=3)  # a scrape interval plus the step of the range query
    late = await jaeger.find_traces("mesh-payments", since=opened_at + margin, until=fault_end)
    assert_no_span(late, service="mesh-payments", after=opened_at + margin, before=fault_end)

    # after the fault: the breaker half-opens, lets a call through, and closes
    confirmed = await order_until_confirmed(customer, lamp.id, within=60)
    closed = metrics.breaker_state("orders", "payments", Window(fault_end, now()))

    async def closed_again() -> bool:
        return metrics.breaker_state("orders", "payments", Window.last(5)).last == "closed"

    await until(closed_again, f"closed again in Prometheus ({closed})", within=15)
    orders = {o.order_id for o in [*cancelled, confirmed]}
    assert len(orders) >= 5
    await invariants()


async def test_an_orders_replica_killed_mid_saga_finishes_it_after_restart(
    admin: Api, customer: Api, faults: Faults, invariants: Settle
) -> None:
    lamp = await admin.create_product(stock=5)
    async with faults.edge_delay("payments", delay_ms=1500):  # the saga waits in its authorize step
        placed = await customer.place_order({lamp.id: 1})

        async def reserved() -> bool:
            return (await admin.order(placed.order_id)).status == "RESERVED"

        await until(reserved, "reserved")
        async with faults.kill_replica("orders"):  # SIGKILL; the exit waits for the restart
            pass
    order = await customer.wait_terminal(placed.order_id, within=60)
    assert order.status == "CONFIRMED", order
    steps = Counter(h.type for h in await customer.history(order.order_id))
    assert steps["stock_reserved"] == steps["payment_authorized"] == steps["confirmed"] == 1
    await invariants()


async def test_one_products_replica_killed_under_traffic_fails_no_client_request(
    admin: Api, customer: Api, faults: Faults, invariants: Settle
) -> None:
    lamp = await admin.create_product(stock=100)
    statuses: Counter[int] = Counter()
    stop = asyncio.Event()

    async def read_steadily() -> None:
        while not stop.is_set():
            response = await customer.request("GET", f"/products/{lamp.id}")
            statuses[response.status_code] += 1
            await asyncio.sleep(0.01)

    readers = [asyncio.create_task(read_steadily()) for _ in range(2)]
    try:
        await until(lambda: _true_after(statuses, 50), "traffic flowing")
        async with faults.kill_replica("products"):  # the seeded RNG picks one of the two
            placed = await customer.place_order({lamp.id: 1})
        order = await customer.wait_terminal(placed.order_id)
        later = sum(statuses.values()) + 50
        await until(lambda: _true_after(statuses, later), "traffic after the restart")
    finally:
        stop.set()
        await asyncio.gather(*readers)
    assert set(statuses) == {200}, f"client requests by status: {dict(statuses)}"
    assert order.status == "CONFIRMED"
    await invariants()


async def _true_after(statuses: Counter[int], count: int) -> bool:
    return sum(statuses.values()) >= count


async def test_orders_placed_while_kafka_is_down_lose_no_event(
    admin: Api, customer: Api, faults: Faults, invariants: Settle
) -> None:
    lamp = await admin.create_product(stock=10)
    async with faults.stop_component("kafka"):
        placed = [await customer.place_order({lamp.id: 1}) for _ in range(3)]
        orders = [await customer.wait_terminal(p.order_id) for p in placed]
        assert {o.status for o in orders} == {"CONFIRMED"}  # the saga is HTTP: no broker needed
        payment = await admin.payment(orders[0].order_id)
        assert payment is not None
        assert payment.status == "authorized", "captured before order.confirmed could travel?"
    # the outboxes relay what they kept, every consumer catches up, nothing is lost
    await invariants(within=120)


async def test_database_latency_degrades_the_slo_then_it_recovers_with_nothing_lost(
    target: Target, admin: Api, customer: Api, faults: Faults, metrics: Metrics, invariants: Settle
) -> None:
    if target.local is None or StackSettings.load(target.local.paths).database != "postgres":
        pytest.skip("SQLite is a file in each service: no TCP hop to slow (PostgreSQL pass only)")
    lamp = await admin.create_product(stock=1000)
    stop = asyncio.Event()

    async def traffic() -> None:
        while not stop.is_set():
            await customer.request("GET", f"/products/{lamp.id}")
            await asyncio.sleep(0.02)

    load = asyncio.create_task(traffic())
    phase = 8.0
    try:
        await asyncio.sleep(phase)  # traffic for a measurement window, not a wait for state
        before = Window.last(phase)
        key = f"during-db-latency-{lamp.id}"
        async with faults.tcp_toxic("postgres", "latency", latency=50):
            try:  # may time out at the gateway: the client retries with the same key
                await customer.place_order({lamp.id: 1}, idempotency_key=key)
            except ApiError as exc:
                if exc.status_code not in (503, 504):
                    raise
            await asyncio.sleep(phase)
            during = Window.last(phase)
        healed = now()

        def p99(window: Window) -> float | None:
            return metrics.latency_quantile("products", window, 0.99)

        compare(p99, before=before, during=during, after=before).assert_degraded(by=0.1)
        # recovery: some full window after the fault is back within 0.1 s of before
        # (the backlog of the slow period drains first), polled with a deadline
        deadline = time.monotonic() + 60
        while True:
            await asyncio.sleep(2.0)  # Prometheus scrapes every 2 s
            if now() - healed < timedelta(seconds=phase):
                continue
            after = Window.last(phase)
            comparison = compare(p99, before=before, during=during, after=after, name="p99 (s)")
            try:
                comparison.assert_degraded_then_recovered(by=0.1, within=0.1)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
    finally:
        stop.set()
        await load
    placed = await customer.place_order({lamp.id: 1}, idempotency_key=key)
    assert (await customer.wait_terminal(placed.order_id)).status == "CONFIRMED"
    assert [o.order_id for o in await customer.orders()] == [placed.order_id], "one order per key"
    await invariants()
