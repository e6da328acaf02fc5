"""The projection in the database: insert-if-absent by event id, aggregate queries, and
the rebuild's overlay of a freshly folded projection."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from system.chassis.db import insert_if_absent
from system.services.analytics.models import CountedEvent
from system.services.analytics.projection import Fact, Projection, Summary, summary_of

CHUNK = 500
"""Ids per ``IN (...)`` list (well under SQLite's bound-parameter limit)."""


async def record(session: AsyncSession, facts: Sequence[Fact]) -> int:
    """Store the ``facts`` whose events are not counted yet, in one statement; how many
    were stored."""
    rows = [
        {
            "event_id": fact.event_id,
            "event_type": fact.event_type,
            "minute": fact.minute,
            "amount_cents": fact.amount_cents,
            "reason": fact.reason,
        }
        for fact in facts
    ]
    return await insert_if_absent(session, CountedEvent, rows)


async def read_summary(session: AsyncSession) -> Summary:
    by_type = (
        await session.execute(
            select(
                CountedEvent.event_type,
                func.count(),
                func.coalesce(func.sum(CountedEvent.amount_cents), 0),
            ).group_by(CountedEvent.event_type)
        )
    ).all()
    reasons = (
        await session.execute(
            select(CountedEvent.reason, func.count())
            .where(CountedEvent.event_type == "order.cancelled")
            .group_by(CountedEvent.reason)
        )
    ).all()
    per_minute = (
        await session.execute(
            select(CountedEvent.minute, func.count())
            .where(CountedEvent.event_type == "order.placed")
            .group_by(CountedEvent.minute)
        )
    ).all()
    return summary_of(
        {t: n for t, n, _ in by_type},
        {t: int(s) for t, _, s in by_type},
        _by_reason(reasons),
        {m: n for m, n in per_minute},
    )


def _by_reason(rows: Iterable[Any]) -> dict[str, int]:
    """A cancellation without a reason is counted under ``""``, as :func:`summarize` does."""
    counts: dict[str, int] = {}
    for reason, n in rows:
        counts[reason or ""] = counts.get(reason or "", 0) + n
    return counts


def _chunks(ids: Iterable[uuid.UUID]) -> Iterable[Sequence[uuid.UUID]]:
    batch: list[uuid.UUID] = []
    for event_id in ids:
        batch.append(event_id)
        if len(batch) == CHUNK:
            yield batch
            batch = []
    if batch:
        yield batch


async def overlay(session: AsyncSession, rebuilt: Projection) -> None:
    """Make the table say exactly what ``rebuilt`` says about every event it has seen, in
    the caller's transaction: the rows of those events are deleted and the rebuilt facts
    inserted. Rows of events the rebuild never read (the live consumer got them after the
    end offsets were captured, or retention dropped them from the log) are left as they are.

    Why the live consumer, running meanwhile, and the rebuild never count an event twice
    nor lose one: a row's key is its event id and its content a function of the event, so
    for each event there is at most one row whichever path wrote it. Transactions on the
    table are serialized (SQLite has one writer connection); on PostgreSQL a concurrent
    insert of the same id fails one of the two on the primary key (the inbox retries the
    live one, which then finds the row; the rebuild answers 409). An event below the end
    offsets is in ``rebuilt``: if the live consumer stored it first, it is replaced by the
    same fact; if later, the live insert finds the row and adds nothing. An event above
    them is never touched here, so the live consumer's row for it stays."""
    for ids in _chunks(rebuilt.seen):
        await session.execute(delete(CountedEvent).where(CountedEvent.event_id.in_(ids)))
    facts = [asdict(f) for f in rebuilt.facts.values()]
    for start in range(0, len(facts), CHUNK):
        await session.execute(insert(CountedEvent), facts[start : start + CHUNK])
    await session.flush()
