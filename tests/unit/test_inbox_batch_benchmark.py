"""The consumer benchmark runs: every event of its first pass is processed, every event
of the second a duplicate (it exits naming the outcome otherwise)."""

from __future__ import annotations

import pytest

from benchmarks.inbox_batch import _round


@pytest.mark.asyncio
async def test_a_small_round_times_fresh_and_duplicate_events() -> None:
    fresh, duplicate = await _round(events=60, batch=7)
    assert fresh > 0
    assert duplicate > 0
