"""Shared helpers of the project's own tests."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from advanced_alchemy.base import orm_registry
from aiokafka.structs import ConsumerRecord
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from system.chassis.db import create_engine
from system.chassis.settings import ServiceSettings
from system.events.schemas import Event, encode

T = TypeVar("T")


def poll_until(
    check: Callable[[], T | None],
    description: str,
    *,
    timeout: float = 20.0,
    interval: float = 0.1,
) -> T:
    """Call ``check`` until it returns a truthy value, or fail naming what never happened."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except Exception as exc:  # the thing polled may not be up yet
            last_error = exc
        else:
            if result:
                return result
        time.sleep(interval)
    detail = f" (last error: {last_error!r})" if last_error else ""
    pytest.fail(f"timed out after {timeout}s waiting for {description}{detail}")


def consumer_record(
    event: Event[Any] | bytes, offset: int = 0, headers: Any = ()
) -> ConsumerRecord[Any, Any]:
    """What the inbox consumer would receive from Kafka for ``event`` (or raw bytes, which
    land on ``orders.events``): to drive ``EventConsumer.process`` without a broker."""
    raw = isinstance(event, bytes)
    value = event if raw else encode(event)
    key = b"k" if raw else event.key.encode()
    return ConsumerRecord(
        topic="orders.events" if raw else event.topic,
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key),
        serialized_value_size=len(value),
        headers=list(headers),
    )


@asynccontextmanager
async def service_db(folder: Path, name: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """One service's own SQLite database, with every table of the chassis (outbox, inbox,
    outbox turn) and ``effect``, a log for test handlers to write to."""
    engine = create_engine(ServiceSettings(name=name, data_dir=folder))
    async with engine.begin() as conn:
        await conn.run_sync(orm_registry.metadata.create_all)
        await conn.execute(text("CREATE TABLE effect (event_id TEXT NOT NULL, note TEXT)"))
    try:
        yield async_sessionmaker(engine, expire_on_commit=False)
    finally:
        await engine.dispose()
