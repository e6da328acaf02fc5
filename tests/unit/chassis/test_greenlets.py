"""``greenlets.spawn``: ``greenlet_spawn``'s behaviour (results, errors, waits through the
event loop, the caller's context, cancellation thrown in) on greenlets that are reused."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import weakref

import pytest
from greenlet import getcurrent, greenlet
from sqlalchemy.util import await_only

from system.chassis import greenlets
from tests.unit.chassis.conftest import Ticks

WHO: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


class Parcel:
    pass


async def test_returns_and_raises_what_the_function_does_and_reuses_its_greenlet() -> None:
    def where(value: int) -> tuple[int, greenlet]:
        return value * 2, getcurrent()

    def fail() -> None:
        raise LookupError("no such thing")

    first, ran_in = await greenlets.spawn(where, 21)
    assert first == 42
    assert ran_in is not getcurrent()
    with pytest.raises(LookupError, match="no such thing"):
        await greenlets.spawn(fail)
    assert (await greenlets.spawn(where, 1))[1] is ran_in  # the same greenlet, again


async def test_waits_through_the_loop_and_concurrent_calls_get_greenlets_of_their_own(
    loop_ticks: Ticks,
) -> None:
    def waits(label: str) -> tuple[str, greenlet]:
        await_only(asyncio.sleep(0.05))
        return label, getcurrent()

    (a, ga), (b, gb) = await asyncio.gather(
        greenlets.spawn(waits, "a"), greenlets.spawn(waits, "b")
    )
    assert (a, b) == ("a", "b")
    assert ga is not gb
    assert loop_ticks.count >= 10  # the loop ran while both waited


async def test_the_function_sees_the_calling_tasks_context() -> None:
    def who() -> str:
        await_only(asyncio.sleep(0))
        return WHO.get()

    async def as_(name: str) -> str:
        WHO.set(name)
        return await greenlets.spawn(who)

    assert await asyncio.gather(as_("ada"), as_("bob")) == ["ada", "bob"]
    assert await greenlets.spawn(who) == "nobody"  # nothing left behind on the greenlet


async def test_cancelling_the_caller_throws_into_the_function_and_the_greenlet_is_reused() -> None:
    cleaned: list[str] = []
    started = asyncio.Event()

    def long_wait() -> None:
        try:
            started.set()
            await_only(asyncio.sleep(30))
        finally:
            cleaned.append("rolled back")

    task = asyncio.create_task(greenlets.spawn(long_wait))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["rolled back"]
    assert await greenlets.spawn(lambda: "still works") == "still works"


async def test_an_idle_greenlet_holds_nothing_of_its_last_call() -> None:
    parcel = Parcel()
    gone = weakref.ref(parcel)

    def keep(p: Parcel) -> Parcel:
        return p

    assert await greenlets.spawn(keep, parcel) is parcel
    del parcel
    gc.collect()
    assert gone() is None
