"""Read the topics from their first offset up to end offsets captured at the start, and
fold every event into a fresh :class:`Projection` (a plain consumer: manual assignment,
no group, so no offset is committed and the live consumer's group is not disturbed)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from system.events.schemas import EventError, decode
from system.services.analytics.projection import Projection, fold

log = logging.getLogger("analytics.replay")


@dataclass
class Replay:
    projection: Projection = field(default_factory=Projection)
    events: int = 0
    """Well-formed events read (a redelivered copy counts here, not in the projection)."""
    rejected: int = 0
    """Undecodable or unknown messages, skipped as the live consumer skips them."""
    end_offsets: dict[str, int] = field(default_factory=dict)
    """``"topic:partition"`` → the end offset read up to (exclusive)."""


async def replay(bootstrap: str, topics: Sequence[str]) -> Replay:
    """Fold ``topics`` from their first offset (0, or the oldest retention kept) to their
    end offsets as of now; events appended meanwhile are left to the live consumer.

    While Kafka is unreachable this waits: bound it with ``asyncio.timeout``."""
    from aiokafka import AIOKafkaConsumer  # noqa: PLC0415 - loaded when rebuilding

    partitions = await _partitions(bootstrap, topics)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",  # else assign() resets to the end, racing the seek
        client_id="analytics-rebuild",
    )
    result = Replay()
    try:
        await consumer.start()
        consumer.assign(partitions)
        ends: dict[Any, int] = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        result.end_offsets = {f"{tp.topic}:{tp.partition}": ends[tp] for tp in partitions}
        await _read(consumer, ends, result)
    finally:
        with contextlib.suppress(Exception):  # never started, or Kafka gone
            await consumer.stop()
    return result


async def _partitions(bootstrap: str, topics: Sequence[str]) -> list[Any]:
    """Every partition of ``topics`` (a topic that does not exist has none)."""
    from aiokafka import TopicPartition  # noqa: PLC0415
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="analytics-rebuild")
    try:
        await admin.start()
        described = await admin.describe_topics(list(topics))
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    return [
        TopicPartition(topic["topic"], partition["partition"])
        for topic in sorted(described, key=lambda t: str(t["topic"]))
        for partition in sorted(topic["partitions"], key=lambda p: int(p["partition"]))
    ]


async def _read(consumer: Any, ends: dict[Any, int], result: Replay) -> None:
    pending = set()
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            pending.add(tp)
        else:
            consumer.pause(tp)
    while pending:
        batches = await consumer.getmany(*pending, timeout_ms=200)
        for tp, records in batches.items():
            for record in records:
                if record.offset < ends[tp]:
                    _fold(record, result)
        for tp in list(pending):
            if await consumer.position(tp) >= ends[tp]:
                consumer.pause(tp)
                pending.discard(tp)


def _fold(record: Any, result: Replay) -> None:
    try:
        event = decode(record.value or b"")
    except EventError as exc:
        log.warning(
            "rebuild: skipped %s[%d]@%d: %s", record.topic, record.partition, record.offset, exc
        )
        result.rejected += 1
        return
    result.events += 1
    fold(result.projection, event)
