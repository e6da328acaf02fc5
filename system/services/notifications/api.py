"""The notifications API: the caller's own notifications, and every user's (admin)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter
from msgspec import Struct
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from system.chassis.auth import Principal, requires_role
from system.chassis.deps import ReadSession
from system.chassis.paging import Offset
from system.chassis.problems import problem_responses
from system.services.notifications.models import Notification
from system.services.notifications.settings import NotificationsSettings

Limit = Annotated[int, QueryParameter(ge=1, le=1000)]


class NotificationView(Struct):
    id: uuid.UUID
    user_id: str
    event_id: str
    event_type: str
    channel: str
    subject: str
    body: str
    created_at: datetime


class NotificationPage(Struct):
    items: list[NotificationView]
    total: int
    limit: int
    offset: int


def _view(n: Notification) -> NotificationView:
    return NotificationView(
        n.id, n.user_id, n.event_id, n.event_type, n.channel, n.subject, n.body, n.created_at
    )


async def _page(
    session: AsyncSession, user_id: str | None, limit: int, offset: int
) -> NotificationPage:
    """Newest first (creation time, then the time-ordered id)."""
    where = [] if user_id is None else [Notification.user_id == user_id]
    total = await session.scalar(select(func.count()).select_from(Notification).where(*where))
    rows = await session.scalars(
        select(Notification)
        .where(*where)
        .order_by(Notification.created_at.desc(), Notification.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return NotificationPage([_view(n) for n in rows], total or 0, limit, offset)


class NotificationsController(Controller):
    path = "/"
    tags = ("notifications",)

    @get("/me", responses=problem_responses(400, 401))
    async def mine(
        self,
        db_read: ReadSession,
        settings: NamedDependency[NotificationsSettings],
        request: Request[Principal, Any, Any],
        limit: Limit = 20,
        offset: Offset = 0,
    ) -> NotificationPage:
        """The caller's notifications, newest first."""
        limit = min(limit, settings.max_page_size)
        return await _page(db_read, request.user.user_id, limit, offset)

    @get("/", guards=[requires_role("admin")], responses=problem_responses(400, 401, 403))
    async def every(
        self,
        db_read: ReadSession,
        settings: NamedDependency[NotificationsSettings],
        limit: Limit = 20,
        offset: Offset = 0,
        user_id: Annotated[
            str | None, QueryParameter(max_length=200, description="only this user's")
        ] = None,
    ) -> NotificationPage:
        """Every user's notifications, newest first (admin)."""
        limit = min(limit, settings.max_page_size)
        return await _page(db_read, user_id, limit, offset)
