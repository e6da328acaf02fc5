"""The notifications service's table: one notification per event."""

from __future__ import annotations

from datetime import UTC, datetime

from advanced_alchemy.base import UUIDv7Base
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column


class Notification(UUIDv7Base):
    """A message sent to a user because of one event. ``event_id`` is UNIQUE: besides the
    inbox, the database itself refuses a second notification for the same event."""

    __tablename__ = "notification"
    __table_args__ = (Index("ix_notification_user_newest", "user_id", "created_at"),)

    user_id: Mapped[str] = mapped_column(String(200))
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    event_type: Mapped[str] = mapped_column(String(100))
    channel: Mapped[str] = mapped_column(String(16), default="email")
    subject: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTimeUTC(timezone=True), default=lambda: datetime.now(UTC), index=True
    )
