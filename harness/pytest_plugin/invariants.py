"""Fixture ``invariants``: settle the target's business invariants after a scenario."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

import pytest

from harness.client import Api
from harness.invariants import Report, Scope, settle

Settle = Callable[..., Awaitable[Report]]


@pytest.fixture
def invariants(admin: Api) -> Settle:
    """``await invariants()`` re-checks until every invariant holds (or ``within`` seconds
    pass), asserts that they do (unless ``expect_ok=False``) and returns the report;
    ``scope=Scope(orders, products)`` checks only a scenario's own entities."""

    async def run(
        *,
        within: float = 60.0,
        names: Iterable[str] | None = None,
        scope: Scope | None = None,
        expect_ok: bool = True,
    ) -> Report:
        report = await settle(admin, within=within, names=names, scope=scope)
        if expect_ok:
            report.assert_ok()
        return report

    return run
