"""A service's event plumbing: the outbox relay and, if it handles events, the inbox
consumer, started and stopped with the app. Without Kafka settings, staged events wait
in the outbox (nothing is lost) and nothing is consumed."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from system.chassis.health import ReadyCheck
from system.chassis.inbox import AnyHandler, EventConsumer
from system.chassis.outbox import OutboxRelay
from system.chassis.outbox_turn import Turns
from system.chassis.settings import ServiceSettings
from system.events.schemas import Event, topic_for

EventHandler = AnyHandler
log = logging.getLogger("chassis.events")


def with_defects(
    handlers: Mapping[str, EventHandler], defects: Iterable[str]
) -> dict[str, EventHandler]:
    """``handlers`` with the deliberate defects applied (see ``ServiceSettings.defects``):
    ``drop:<type>`` swaps that type's handler for one that acknowledges and does nothing."""
    result = dict(handlers)
    for defect in defects:
        kind, _, event_type = defect.partition(":")
        if kind != "drop" or event_type not in handlers:
            raise ValueError(
                f"unknown defect {defect!r}: use drop:<event type>, one of {sorted(handlers)}"
            )
        log.warning("DELIBERATE DEFECT: %s events are acknowledged and dropped", event_type)

        async def drop(session: AsyncSession, event: Event[Any]) -> None:
            return None

        result[event_type] = drop
    return result


class EventRuntime:
    def __init__(
        self,
        settings: ServiceSettings,
        session_maker: async_sessionmaker[AsyncSession],
        handlers: Mapping[str, EventHandler],
        *,
        reader: async_sessionmaker[AsyncSession] | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.session_maker = session_maker
        bootstrap = settings.kafka_bootstrap
        self.relay = (
            OutboxRelay(
                session_maker,
                bootstrap,
                batch=settings.outbox_batch,
                linger=settings.outbox_linger_ms / 1000,
                tracer_provider=tracer_provider,
                reader=reader,
                turns=Turns() if settings.outbox_shared else None,
            )
            if bootstrap
            else None
        )
        self.consumer = (
            EventConsumer(
                session_maker,
                bootstrap,
                group_id=settings.name,
                topics=sorted({topic_for(t) for t in handlers}),
                handlers=handlers,
                tracer_provider=tracer_provider,
                kafka_options={
                    "fetch_max_wait_ms": settings.kafka_fetch_wait_ms,
                    "fetch_min_bytes": settings.kafka_fetch_min_bytes,
                },
            )
            if bootstrap and handlers
            else None
        )

    async def start(self) -> None:
        if self.relay is not None:
            await self.relay.start()
        if self.consumer is not None:
            await self.consumer.start()

    async def stop(self) -> None:
        """Consumer first (its handlers may stage events), then flush the outbox."""
        if self.consumer is not None:
            await self.consumer.stop()
        if self.relay is not None:
            await self.relay.stop(flush=True)

    def ready_checks(self) -> dict[str, ReadyCheck]:
        relay = self.relay
        if relay is None:
            return {}

        async def kafka() -> str | None:
            if not relay.running:
                return "kafka: the outbox relay is not running"
            if relay.last_error is not None:
                return f"kafka: {relay.last_error.__class__.__name__}"
            return None

        return {"kafka": kafka}
