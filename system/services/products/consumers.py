"""Order outcomes settle reservations: confirmed → commit, cancelled → release.

Runs through the chassis inbox, so a redelivered event has no second effect; an order
that never held stock (cancelled before reserving) is acknowledged and ignored.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from system.events.schemas import Event, StockCommittedV1, StockReleasedV1
from system.services.products import stock
from system.services.products.api import settle

log = logging.getLogger("products.consumers")


async def _settle(session: AsyncSession, order_id: str, operation: Any, event: type[Any]) -> None:
    try:
        await settle(session, order_id, operation, event)
    except stock.NoReservation:
        log.info("order %s holds no reservation: nothing to settle", order_id)
    except stock.ReservationConflict as exc:
        log.warning("order %s: %s", order_id, exc)


async def on_order_confirmed(session: AsyncSession, event: Event[Any]) -> None:
    await _settle(session, event.data.order_id, stock.commit_in, StockCommittedV1)


async def on_order_cancelled(session: AsyncSession, event: Event[Any]) -> None:
    await _settle(session, event.data.order_id, stock.release_in, StockReleasedV1)


HANDLERS = {"order.confirmed": on_order_confirmed, "order.cancelled": on_order_cancelled}
