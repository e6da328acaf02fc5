"""The analytics API: the summary of the projection, and its rebuild from the log (admin)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.exceptions import ClientException, ServiceUnavailableException
from msgspec import Struct
from sqlalchemy.exc import IntegrityError

from system.chassis.auth import requires_role
from system.chassis.deps import DbSession, ReadSession
from system.chassis.problems import problem_responses
from system.services.analytics import store
from system.services.analytics.consumers import SOURCE_TOPICS
from system.services.analytics.projection import Summary
from system.services.analytics.replay import replay
from system.services.analytics.settings import AnalyticsSettings

log = logging.getLogger("analytics.api")


class RebuildView(Struct):
    summary: Summary
    events_folded: int
    """Events read from the log (a redelivered copy is read, and counted once)."""
    rejected: int
    """Messages of the log that are not events this service can read."""
    end_offsets: dict[str, int]
    """``"topic:partition"`` → the offset the rebuild read up to (exclusive)."""


class AnalyticsController(Controller):
    path = "/"
    tags = ("analytics",)

    @get("/summary", responses=problem_responses(401))
    async def summary(self, db_read: ReadSession) -> Summary:
        """Counters, revenue, cancellations per reason and orders placed per minute."""
        return await store.read_summary(db_read)

    @post(
        "/rebuild",
        status_code=200,
        guards=[requires_role("admin")],
        responses=problem_responses(401, 403, 409, 503),
    )
    async def rebuild(
        self,
        db_session: DbSession,
        settings: NamedDependency[AnalyticsSettings],
        request: Request[Any, Any, Any],
    ) -> RebuildView:
        """Fold the topics again from offset 0 and replace what the projection says about
        every event read (admin); the live consumer keeps running meanwhile."""
        if settings.kafka_bootstrap is None:
            raise ServiceUnavailableException(detail="no Kafka configured")
        lock = request.app.state.rebuild_lock
        if lock.locked():
            raise ClientException(status_code=409, detail="a rebuild is already running")
        async with lock:
            try:
                async with asyncio.timeout(settings.rebuild_timeout_s):
                    replayed = await replay(settings.kafka_bootstrap, SOURCE_TOPICS)
            except Exception as exc:  # unreachable, or timed out
                log.warning("rebuild: cannot read the event log", exc_info=True)
                raise ServiceUnavailableException(
                    detail=f"cannot read the event log: {type(exc).__name__}"
                ) from None
            try:  # no connection is held while Kafka is read: the session starts here
                await store.overlay(db_session, replayed.projection)
            except IntegrityError:  # a concurrent live insert of the same event (PostgreSQL)
                await db_session.rollback()
                raise ClientException(
                    status_code=409, detail="the projection changed meanwhile; retry"
                ) from None
            summary = await store.read_summary(db_session)
        return RebuildView(summary, replayed.events, replayed.rejected, replayed.end_offsets)
