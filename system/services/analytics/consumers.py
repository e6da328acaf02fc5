"""Every event the projection counts is stored once, keyed by its id (via the inbox, and
insert-if-absent on its own: a copy that bypassed the inbox still counts once). The
events of a fetched batch are stored together, in one statement."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from system.chassis.inbox import Batched
from system.events.schemas import Event, topic_for
from system.services.analytics import store
from system.services.analytics.projection import COUNTED, fact_of


async def count(session: AsyncSession, events: Sequence[Event[Any]]) -> None:
    """The facts of ``events``, stored in one statement."""
    facts = [fact for fact in map(fact_of, events) if fact is not None]
    if facts:
        await store.record(session, facts)


HANDLERS: dict[str, Batched] = dict.fromkeys(COUNTED, Batched(count))

SOURCE_TOPICS = tuple(sorted({topic_for(t) for t in HANDLERS}))
"""The topics the live consumer reads, and the rebuild replays."""
