"""Fixtures of the chassis' unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from advanced_alchemy.base import orm_registry
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from system.chassis.db import create_engine
from system.chassis.settings import ServiceSettings


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
    """Sessions on a service's SQLite file with every table of the chassis, and
    ``effect`` for handlers to write to."""
    engine = create_engine(ServiceSettings(name="unit", data_dir=tmp_path))
    async with engine.begin() as conn:
        await conn.run_sync(orm_registry.metadata.create_all)
        await conn.execute(text("CREATE TABLE effect (event_id TEXT NOT NULL, note TEXT)"))
    try:
        yield async_sessionmaker(engine, expire_on_commit=False)
    finally:
        await engine.dispose()
