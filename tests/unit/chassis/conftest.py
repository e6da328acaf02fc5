"""Fixtures of the chassis' unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.conftest import service_db


@dataclass
class Ticks:
    count: int = 0


@pytest.fixture
async def loop_ticks() -> AsyncIterator[Ticks]:
    """How many times a task sleeping 1 ms at a time ran while the test did: a wait that
    blocked the event loop would leave it at (nearly) nothing."""
    ticks = Ticks()

    async def tick() -> None:
        while True:
            ticks.count += 1
            await asyncio.sleep(0.001)

    ticker = asyncio.create_task(tick())
    yield ticks
    ticker.cancel()


@pytest_asyncio.fixture
async def maker(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on a service's SQLite file (``tests.conftest.service_db``)."""
    async with service_db(tmp_path, "unit") as sessions:
        yield sessions
