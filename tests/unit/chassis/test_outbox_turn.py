"""Relays of several processes on one outbox take turns: each event is sent once."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import select

from system.chassis.db import in_transaction
from system.chassis.outbox_turn import OutboxTurn, Turns
from tests.unit.chassis.test_outbox_inbox import (
    FakeKafka,
    Maker,
    Message,
    eventually,
    placed,
    relay_for,
    stage_all,
)


def slow(kafka: FakeKafka, seconds: float, delivered: list[str]) -> None:
    """Kafka acknowledges each batch ``seconds`` after it was sent (a cycle long enough
    for another relay to read the same rows meanwhile); ``delivered`` gets the event ids
    in the order they reached Kafka, whichever relay sent them."""
    deliver = kafka.deliver

    def arrive(future: asyncio.Future[Any], batch: list[Message]) -> None:
        delivered.extend(h["event-id"].decode() for _t, _k, _v, h in batch)
        deliver(future, batch)

    def later(future: asyncio.Future[Any], batch: list[Message]) -> None:
        asyncio.get_running_loop().call_later(seconds, arrive, future, batch)

    kafka.deliver = later  # type: ignore[method-assign]


async def holder(maker: Maker) -> str | None:
    async with maker() as session:
        return await session.scalar(select(OutboxTurn.holder))


@pytest.mark.asyncio
@pytest.mark.parametrize("shared", [True, False], ids=["taking-turns", "alone"])
async def test_two_relays_on_one_outbox_send_each_event_once_and_in_order(
    maker: Maker, shared: bool
) -> None:
    first, second = FakeKafka(), FakeKafka()
    delivered: list[str] = []
    for kafka in (first, second):
        slow(kafka, 0.02, delivered)
    relays = [
        relay_for(maker, kafka, linger=0.005, turns=Turns() if shared else None)
        for kafka in (first, second)
    ]
    for relay in relays:
        await relay.start()
    events = [placed(f"o-{n % 5}", n) for n in range(60)]
    try:
        for start in range(0, len(events), 6):  # each commit wakes both relays
            await stage_all(maker, events[start : start + 6])
            await asyncio.sleep(0.005)
        staged = {str(e.id) for e in events}
        await eventually(lambda: staged <= set(delivered), "every event sent")
        for relay in relays:
            await asyncio.wait_for(relay.flush(), 5.0)
    finally:
        for relay in relays:
            await relay.stop()
    copies = Counter(delivered)
    if not shared:  # what the turns are for: both relays read, and sent, the same rows
        assert max(copies.values()) > 1
        return
    assert set(copies.values()) == {1}
    assert first.sent
    assert second.sent
    for key in {e.key for e in events}:
        order = [str(e.id) for e in events if e.key == key]
        assert [i for i in delivered if i in order] == order
    assert await holder(maker) is None  # given back at the end of every cycle


@pytest.mark.asyncio
async def test_the_turn_of_a_relay_that_died_in_its_cycle_is_taken_over_when_it_runs_out(
    maker: Maker,
) -> None:
    dead = Turns(turn_s=0.5)
    await in_transaction(maker, dead.make_row)
    assert await in_transaction(maker, dead.take)  # and never given back: killed
    runs_out = asyncio.get_running_loop().time() + 0.5
    kafka = FakeKafka()
    sent_at: list[float] = []
    deliver = kafka.deliver

    def timed(future: asyncio.Future[Any], batch: list[Message]) -> None:
        sent_at.append(asyncio.get_running_loop().time())
        deliver(future, batch)

    kafka.deliver = timed  # type: ignore[method-assign]
    relay = relay_for(maker, kafka, turns=Turns())
    await relay.start()
    try:
        await stage_all(maker, [placed("o-1")])
        await eventually(lambda: kafka.sent, "the event sent after the dead relay's turn")
    finally:
        await relay.stop()
    assert sent_at[0] >= runs_out - 0.05
    assert await holder(maker) is None


@pytest.mark.asyncio
async def test_a_relay_gives_the_turn_back_when_kafka_refuses_it(maker: Maker) -> None:
    kafka = FakeKafka()
    kafka.refuse_start = True
    relay = relay_for(maker, kafka, turns=Turns(turn_s=60.0))
    await relay.start()
    try:
        await stage_all(maker, [placed("o-1")])
        await eventually(lambda: kafka.started >= 2, "a failed attempt, then another")
    finally:
        await relay.stop()
    assert kafka.sent == []
    assert await holder(maker) is None  # not held for the 60 s of its turn
