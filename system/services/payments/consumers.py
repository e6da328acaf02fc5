"""``order.confirmed`` captures the order's authorization (exactly once, via the inbox)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from system.events.schemas import Event
from system.services.payments import ledger

log = logging.getLogger("payments.consumers")


async def on_order_confirmed(session: AsyncSession, event: Event[Any]) -> None:
    try:
        await ledger.capture(session, event.data.order_id)
    except (ledger.NoPayment, ledger.PaymentConflict) as exc:
        log.error("cannot capture order %s: %s", event.data.order_id, exc)


HANDLERS = {"order.confirmed": on_order_confirmed}
