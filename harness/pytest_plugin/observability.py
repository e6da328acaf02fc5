"""Fixtures ``jaeger`` (traces) and ``metrics`` (PromQL) on the target's own endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from harness.metrics import Metrics
from harness.target import Target
from harness.traces import Jaeger


@pytest.fixture
async def jaeger(target: Target) -> AsyncIterator[Jaeger]:
    """The target's Jaeger query service (``/api/v3``)."""
    async with Jaeger(target.jaeger_url) as client:
        yield client


@pytest.fixture
def metrics(target: Target) -> Metrics:
    """The target's Prometheus (PromQL, SLO windows, before / during / after)."""
    return Metrics(target.prometheus_url)
