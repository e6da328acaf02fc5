"""Kafka readiness and topic creation, through the address clients use (the proxy)."""

from __future__ import annotations

import base64
import contextlib
import logging
import uuid
from collections.abc import Sequence
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from system.runtime.process import Hook, Probe
from system.runtime.topology import TopicDef

log = logging.getLogger("harness.kafka")


def cluster_id(data_dir: Path) -> str:
    """The stack's KRaft cluster id, made once and kept beside the broker's data."""
    path = data_dir / "cluster-id"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(new_cluster_id())
    return path.read_text().strip()


def new_cluster_id() -> str:
    """A random KRaft cluster id (URL-safe base64 of a UUID). Like Kafka's own
    ``Uuid.randomUuid``, never one starting with ``-``: the storage tool would read it as
    an option (``--cluster-id expected one argument``)."""
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not candidate.startswith("-"):
            return candidate


def _admin(bootstrap: str) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)


def kafka_probe(bootstrap: str) -> Probe:
    """Ready when a metadata request through ``bootstrap`` succeeds."""

    async def probe() -> bool:
        admin = _admin(bootstrap)
        try:
            await admin.start()
            await admin.list_topics()
        except (TimeoutError, KafkaError, OSError):
            return False
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
        return True

    return probe


def create_topics(bootstrap: str, topics: Sequence[TopicDef]) -> Hook:
    """Create the topology's topics that do not exist yet (idempotent)."""

    async def hook() -> None:
        if not topics:
            return
        admin = _admin(bootstrap)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [t for t in topics if t.name not in existing]
            if missing:
                new = [
                    NewTopic(
                        t.name,
                        t.partitions,
                        replication_factor=1,
                        topic_configs={"cleanup.policy": "compact"} if t.compacted else {},
                    )
                    for t in missing
                ]
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(new)
                log.info("created topics %s", ", ".join(t.name for t in missing))
        finally:
            await admin.close()

    return hook
