"""Deliberate defects: how the harness's own tests break a service on purpose."""

from __future__ import annotations

from typing import Any

import pytest

from system.chassis.events import with_defects

calls: list[str] = []


async def handle(session: Any, event: Any) -> None:
    calls.append(event)


async def test_drop_acknowledges_the_event_without_its_effect() -> None:
    handlers = with_defects(
        {"order.confirmed": handle, "order.cancelled": handle}, ["drop:order.confirmed"]
    )
    calls.clear()
    await handlers["order.confirmed"](None, "confirmed")
    await handlers["order.cancelled"](None, "cancelled")
    assert calls == ["cancelled"]


def test_no_defect_leaves_the_handlers_alone() -> None:
    handlers = {"order.confirmed": handle}
    assert with_defects(handlers, []) == handlers


@pytest.mark.parametrize("defect", ["drop:order.shipped", "explode:order.confirmed", "drop"])
def test_an_unknown_defect_is_refused_naming_the_choices(defect: str) -> None:
    with pytest.raises(ValueError, match=r"use drop:<event type>, one of \['order.confirmed'\]"):
        with_defects({"order.confirmed": handle}, [defect])
