"""Fixtures ``jaeger`` (traces) and ``metrics`` (PromQL) on the target's own endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from harness.target import Target
from harness.traces import Jaeger


@pytest.fixture
async def jaeger(target: Target) -> AsyncIterator[Jaeger]:
    """The target's Jaeger query service (``/api/v3``)."""
    async with Jaeger(target.jaeger_url) as client:
        yield client
