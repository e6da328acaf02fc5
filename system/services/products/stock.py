"""Reservations, idempotent by order id: reserve (all or nothing), release, commit.

Each operation runs in the caller's transaction. Repeating an operation is a no-op that
returns the same outcome; a transition that contradicts the past (commit after release,
a second reserve with other items) is a :class:`ReservationConflict`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from system.services.products.models import Product, ReservationLine


class ReservationError(Exception):
    pass


class OutOfStock(ReservationError):
    def __init__(self, product_ids: Sequence[uuid.UUID]) -> None:
        self.product_ids = list(product_ids)
        super().__init__(f"not enough stock of {', '.join(map(str, self.product_ids))}")


class UnknownProduct(ReservationError):
    def __init__(self, product_ids: Sequence[uuid.UUID]) -> None:
        self.product_ids = list(product_ids)
        super().__init__(f"no product {', '.join(map(str, self.product_ids))}")


class ReservationConflict(ReservationError):
    pass


@dataclass(frozen=True)
class Line:
    product_id: uuid.UUID
    quantity: int


@dataclass(frozen=True)
class Reservation:
    order_id: str
    state: str
    lines: tuple[Line, ...]


async def get_reservation(session: AsyncSession, order_id: str) -> Reservation | None:
    rows = (
        await session.scalars(
            select(ReservationLine)
            .where(ReservationLine.order_id == order_id)
            .order_by(ReservationLine.product_id)
        )
    ).all()
    if not rows:
        return None
    states = {r.state for r in rows}
    return Reservation(
        order_id,
        states.pop() if len(states) == 1 else "mixed",
        tuple(Line(r.product_id, r.quantity) for r in rows),
    )


def _merge(lines: Sequence[Line]) -> tuple[Line, ...]:
    totals: dict[uuid.UUID, int] = {}
    for line in lines:
        totals[line.product_id] = totals.get(line.product_id, 0) + line.quantity
    return tuple(Line(pid, qty) for pid, qty in sorted(totals.items()))


async def reserve(session: AsyncSession, order_id: str, lines: Sequence[Line]) -> Reservation:
    wanted = _merge(lines)
    existing = await get_reservation(session, order_id)
    if existing is not None:
        if existing.lines != wanted:
            raise ReservationConflict(f"order {order_id} already holds a different reservation")
        return existing
    ids = [line.product_id for line in wanted]
    known = set((await session.scalars(select(Product.id).where(Product.id.in_(ids)))).all())
    if missing := [pid for pid in ids if pid not in known]:
        raise UnknownProduct(missing)
    short = []
    for line in wanted:  # sorted by product id: concurrent reservations lock in one order
        result = await session.execute(
            update(Product)
            .where(Product.id == line.product_id, Product.available >= line.quantity)
            .values(
                available=Product.available - line.quantity,
                reserved=Product.reserved + line.quantity,
            )
        )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            short.append(line.product_id)
    if short:
        raise OutOfStock(short)  # the caller rolls back: all or nothing
    session.add_all(
        ReservationLine(order_id=order_id, product_id=line.product_id, quantity=line.quantity)
        for line in wanted
    )
    await session.flush()
    return Reservation(order_id, "reserved", wanted)


async def _finish(session: AsyncSession, order_id: str, target: str) -> Reservation:
    """Move every line of the order from reserved to ``target`` (released or committed)."""
    rows = (
        await session.scalars(
            select(ReservationLine)
            .where(ReservationLine.order_id == order_id)
            .order_by(ReservationLine.product_id)
            .with_for_update()
        )
    ).all()
    if not rows:
        raise ReservationConflict(f"order {order_id} holds no reservation")
    for row in rows:
        if row.state == target:
            continue
        if row.state != "reserved":
            raise ReservationConflict(f"order {order_id}'s reservation is already {row.state}")
        moved = {
            "released": {"available": Product.available + row.quantity},
            "committed": {"sold": Product.sold + row.quantity},
        }[target]
        await session.execute(
            update(Product)
            .where(Product.id == row.product_id)
            .values(reserved=Product.reserved - row.quantity, **moved)
        )
        row.state = target
    await session.flush()
    return Reservation(order_id, target, tuple(Line(r.product_id, r.quantity) for r in rows))


async def release(session: AsyncSession, order_id: str) -> Reservation:
    return await _finish(session, order_id, "released")


async def commit(session: AsyncSession, order_id: str) -> Reservation:
    return await _finish(session, order_id, "committed")
