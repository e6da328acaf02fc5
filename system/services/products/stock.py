"""Reservations, idempotent by order id: reserve (all or nothing), release, commit.

Each operation runs in the caller's transaction. Repeating an operation is a no-op that
returns the same outcome; a transition that contradicts the past (commit after release,
a second reserve with other items) is a :class:`ReservationConflict`.

Core statements, not the ORM's unit of work: reserve and commit are on every order's path.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Row, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from system.chassis.db import table_of
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


class NoReservation(ReservationConflict):
    """The order holds no stock (it was cancelled before reserving, or never ordered)."""


@dataclass(frozen=True)
class Line:
    product_id: uuid.UUID
    quantity: int


@dataclass(frozen=True)
class Reservation:
    order_id: str
    state: str
    lines: tuple[Line, ...]


@dataclass(frozen=True)
class Settlement:
    reservation: Reservation
    moved: bool
    """False when every line was in the target state already (a repeat)."""


_LINES = table_of(ReservationLine)
_PRODUCTS = table_of(Product)


# Built once: a statement built per call costs more than running it.
_LINES_OF = (
    select(_LINES.c.product_id, _LINES.c.quantity, _LINES.c.state)
    .where(_LINES.c.order_id == bindparam("the_order"))
    .order_by(_LINES.c.product_id)
)
_LINES_OF_FOR_UPDATE = _LINES_OF.with_for_update()
_KNOWN = select(_PRODUCTS.c.id).where(_PRODUCTS.c.id.in_(bindparam("ids", expanding=True)))
_TAKE = (
    update(_PRODUCTS)
    .where(_PRODUCTS.c.id == bindparam("the_product"), _PRODUCTS.c.available >= bindparam("n"))
    .values(
        available=_PRODUCTS.c.available - bindparam("n"),
        reserved=_PRODUCTS.c.reserved + bindparam("n"),
    )
)
_SETTLE = {
    "released": update(_PRODUCTS)
    .where(_PRODUCTS.c.id == bindparam("the_product"))
    .values(
        reserved=_PRODUCTS.c.reserved - bindparam("n"),
        available=_PRODUCTS.c.available + bindparam("n"),
    ),
    "committed": update(_PRODUCTS)
    .where(_PRODUCTS.c.id == bindparam("the_product"))
    .values(reserved=_PRODUCTS.c.reserved - bindparam("n"), sold=_PRODUCTS.c.sold + bindparam("n")),
}
_SET_STATE = update(_LINES).where(
    _LINES.c.order_id == bindparam("the_order"), _LINES.c.state == "reserved"
)
_INSERT_LINES = insert(_LINES)


def _reservation(order_id: str, rows: Sequence[Row[tuple[uuid.UUID, int, str]]]) -> Reservation:
    states = {r.state for r in rows}
    return Reservation(
        order_id,
        states.pop() if len(states) == 1 else "mixed",
        tuple(Line(r.product_id, r.quantity) for r in rows),
    )


async def get_reservation(session: AsyncSession, order_id: str) -> Reservation | None:
    rows = (await session.execute(_LINES_OF, {"the_order": order_id})).all()
    return _reservation(order_id, rows) if rows else None


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
    known = set((await session.scalars(_KNOWN, {"ids": ids})).all())
    if missing := [pid for pid in ids if pid not in known]:
        raise UnknownProduct(missing)
    short = []
    for line in wanted:  # sorted by product id: concurrent reservations lock in one order
        result = await session.execute(_TAKE, {"the_product": line.product_id, "n": line.quantity})
        if result.rowcount == 0:  # type: ignore[attr-defined]
            short.append(line.product_id)
    if short:
        raise OutOfStock(short)  # the caller rolls back: all or nothing
    await session.execute(  # a concurrent reserve of the same order: IntegrityError
        _INSERT_LINES,
        [
            {"order_id": order_id, "product_id": line.product_id, "quantity": line.quantity}
            for line in wanted
        ],
    )
    return Reservation(order_id, "reserved", wanted)


async def _finish(session: AsyncSession, order_id: str, target: str) -> Settlement:
    """Move every line of the order from reserved to ``target`` (released or committed)."""
    rows = (await session.execute(_LINES_OF_FOR_UPDATE, {"the_order": order_id})).all()
    if not rows:
        raise NoReservation(f"order {order_id} holds no reservation")
    moving = [r for r in rows if r.state != target]
    for row in moving:
        if row.state != "reserved":
            raise ReservationConflict(f"order {order_id}'s reservation is already {row.state}")
    for row in moving:
        await session.execute(_SETTLE[target], {"the_product": row.product_id, "n": row.quantity})
    if moving:
        await session.execute(_SET_STATE, {"the_order": order_id, "state": target})
    lines = tuple(Line(r.product_id, r.quantity) for r in rows)
    return Settlement(Reservation(order_id, target, lines), bool(moving))


async def release(session: AsyncSession, order_id: str) -> Settlement:
    return await _finish(session, order_id, "released")


async def commit(session: AsyncSession, order_id: str) -> Settlement:
    return await _finish(session, order_id, "committed")
