"""The analytics projection: one row per counted event, keyed by the event's id.

Every figure of the summary is an aggregate over these rows, so an event counts at most
once whatever path wrote it (live inbox consumer or rebuild): the primary key says so.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from advanced_alchemy.base import DefaultBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column


class CountedEvent(DefaultBase):
    __tablename__ = "analytics_counted_event"
    __table_args__ = (Index("ix_analytics_counted_event_type_minute", "event_type", "minute"),)

    event_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    event_type: Mapped[str] = mapped_column(String(100))
    minute: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    """The event's ``occurred_at``, truncated to the minute (UTC)."""
    amount_cents: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(String(200), nullable=True)
