"""Every event the projection counts is stored once, keyed by its id (via the inbox, and
insert-if-absent on its own: a copy that bypassed the inbox still counts once)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from system.chassis.inbox import Handler
from system.events.schemas import Event, topic_for
from system.services.analytics import store
from system.services.analytics.projection import COUNTED, fact_of


async def count(session: AsyncSession, event: Event[Any]) -> None:
    fact = fact_of(event)
    if fact is not None:
        await store.record(session, fact)


HANDLERS: dict[str, Handler] = dict.fromkeys(COUNTED, count)

SOURCE_TOPICS = tuple(sorted({topic_for(t) for t in HANDLERS}))
"""The topics the live consumer reads, and the rebuild replays."""
