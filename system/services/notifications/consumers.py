"""Every user and order event records one notification (exactly once, via the inbox).

The handler is idempotent on its own as well: a notification for an event id that is
already stored is not written again (and ``event_id`` is UNIQUE in the table), so even a
delivery that bypassed the inbox cannot notify twice. The notifications of a fetched
batch are written together, in one statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from system.chassis.db import insert_if_absent
from system.chassis.inbox import Batched
from system.events.schemas import Event
from system.services.notifications.messages import TEMPLATES, message_for
from system.services.notifications.models import Notification


async def notify(session: AsyncSession, events: Sequence[Event[Any]]) -> None:
    rows = []
    for event in events:
        message = message_for(event)
        if message is not None:
            rows.append(
                {
                    "user_id": message.user_id,
                    "event_id": str(event.id),
                    "event_type": event.type,
                    "channel": "email",
                    "subject": message.subject,
                    "body": message.body,
                }
            )
    if rows:
        await insert_if_absent(session, Notification, rows)


HANDLERS: dict[str, Batched] = dict.fromkeys(TEMPLATES, Batched(notify))
