"""Shared helpers of the project's own tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from aiokafka.structs import ConsumerRecord

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
