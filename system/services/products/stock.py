"""Reservations, idempotent by order id: reserve (all or nothing), release, commit.

Each operation runs in the caller's transaction. Repeating an operation is a no-op that
returns the same outcome; a transition that contradicts the past (commit after release,
a second reserve with other items) is a :class:`ReservationConflict`.

Core statements, not the ORM's unit of work: reserve and commit are on every order's path.
The operations are synchronous functions of a ``Session`` (``*_in``), run in the caller's
transaction inside one ``run_sync`` greenlet (``get_reservation`` also has an ``async``
form, for the API's reads).

**Lock order.** Every transaction that changes products' counters changes them in
product-id order, so two of them never wait on each other in a cycle (on PostgreSQL a
deadlock costs a second of ``deadlock_timeout`` and a retried batch). A reservation takes
its products sorted. A settlement (release, commit) only records its moves; they are
applied just before the transaction commits, summed per product and sorted, so a
consumer settling a whole fetch of orders touches each product once, at the end, and
holds its row locks for the commit alone.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Row, bindparam, event, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from system.chassis.db import Executor, forget_at_transaction_end, table_of
from system.chassis.prepared import Prepared
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
_SELECT_LINES = (
    select(_LINES.c.product_id, _LINES.c.quantity, _LINES.c.state)
    .where(_LINES.c.order_id == bindparam("the_order"))
    .order_by(_LINES.c.product_id)
)
_LINES_OF = Prepared(_SELECT_LINES)
_LINES_OF_FOR_UPDATE = Prepared(_SELECT_LINES.with_for_update())
_KNOWN = select(_PRODUCTS.c.id).where(_PRODUCTS.c.id.in_(bindparam("ids", expanding=True)))
_TAKE = Prepared(
    update(_PRODUCTS)
    .where(_PRODUCTS.c.id == bindparam("the_product"), _PRODUCTS.c.available >= bindparam("n"))
    .values(
        available=_PRODUCTS.c.available - bindparam("n"),
        reserved=_PRODUCTS.c.reserved + bindparam("n"),
    )
)
_SETTLE = {
    "released": Prepared(
        update(_PRODUCTS)
        .where(_PRODUCTS.c.id == bindparam("the_product"))
        .values(
            reserved=_PRODUCTS.c.reserved - bindparam("n"),
            available=_PRODUCTS.c.available + bindparam("n"),
        )
    ),
    "committed": Prepared(
        update(_PRODUCTS)
        .where(_PRODUCTS.c.id == bindparam("the_product"))
        .values(
            reserved=_PRODUCTS.c.reserved - bindparam("n"), sold=_PRODUCTS.c.sold + bindparam("n")
        )
    ),
}
_SET_STATE = Prepared(
    update(_LINES).where(_LINES.c.order_id == bindparam("the_order"), _LINES.c.state == "reserved")
)
_INSERT_LINES = Prepared(insert(_LINES))


def _reservation(order_id: str, rows: Sequence[Row[tuple[uuid.UUID, int, str]]]) -> Reservation:
    states = {r.state for r in rows}
    return Reservation(
        order_id,
        states.pop() if len(states) == 1 else "mixed",
        tuple(Line(r.product_id, r.quantity) for r in rows),
    )


async def get_reservation(session: AsyncSession, order_id: str) -> Reservation | None:
    return await session.run_sync(get_reservation_in, order_id)


def get_reservation_in(session: Executor, order_id: str) -> Reservation | None:
    rows = _LINES_OF(session, {"the_order": order_id}).all()
    return _reservation(order_id, rows) if rows else None


def _merge(lines: Sequence[Line]) -> tuple[Line, ...]:
    totals: dict[uuid.UUID, int] = {}
    for line in lines:
        totals[line.product_id] = totals.get(line.product_id, 0) + line.quantity
    return tuple(Line(pid, qty) for pid, qty in sorted(totals.items()))


def reserve_in(session: Executor, order_id: str, lines: Sequence[Line]) -> tuple[Reservation, bool]:
    """The order's reservation, and whether this call made it (a repeat returns the one
    held, unchanged).

    The counters are taken first, in product-id order (the module's lock order); a line
    that cannot be taken is short of stock or names no product, and only then is the
    catalog asked which (the common path costs no query for it). The lines are recorded
    after, so an unknown product never reaches their foreign key."""
    wanted = _merge(lines)
    existing = get_reservation_in(session, order_id)
    if existing is not None:
        if existing.lines != wanted:
            raise ReservationConflict(f"order {order_id} already holds a different reservation")
        return existing, False
    short = []
    for line in wanted:  # sorted by product id
        if not _TAKE(session, {"the_product": line.product_id, "n": line.quantity}).rowcount:
            short.append(line.product_id)
    if short:  # the caller rolls back: all or nothing
        known = set(session.scalars(_KNOWN, {"ids": short}).all())
        if missing := [pid for pid in short if pid not in known]:
            raise UnknownProduct(missing)
        raise OutOfStock(short)
    _INSERT_LINES(  # a concurrent reserve of the same order: IntegrityError
        session,
        [
            {"order_id": order_id, "product_id": line.product_id, "quantity": line.quantity}
            for line in wanted
        ],
    )
    return Reservation(order_id, "reserved", wanted), True


_MOVES = "products.stock_moves"
"""``session.info`` key: the settlements' counter moves, ``(product, target) -> units``."""


def _move(session: Session, target: str, product_id: uuid.UUID, units: int) -> None:
    moves: dict[tuple[uuid.UUID, str], int] = session.info.setdefault(_MOVES, {})
    moves[(product_id, target)] = moves.get((product_id, target), 0) + units


@event.listens_for(Session, "before_commit")
def _apply_moves(session: Session) -> None:
    """The recorded moves, one UPDATE per product and target, in product-id order."""
    moves = session.info.pop(_MOVES, None)
    for (product_id, target), units in sorted((moves or {}).items()):
        _SETTLE[target](session, {"the_product": product_id, "n": units})


forget_at_transaction_end(_MOVES)  # rolled back (a commit has applied them already)


def _finish(session: Session, order_id: str, target: str) -> Settlement:
    """Move every line of the order from reserved to ``target`` (released or committed);
    the products' counters follow at commit (see the module's lock order)."""
    rows = _LINES_OF_FOR_UPDATE(session, {"the_order": order_id}).all()
    if not rows:
        raise NoReservation(f"order {order_id} holds no reservation")
    moving = [r for r in rows if r.state != target]
    for row in moving:
        if row.state != "reserved":
            raise ReservationConflict(f"order {order_id}'s reservation is already {row.state}")
    if moving:
        _SET_STATE(session, {"the_order": order_id, "state": target})
    for row in moving:
        if session.in_nested_transaction():  # a savepoint may roll back alone: apply now
            _SETTLE[target](session, {"the_product": row.product_id, "n": row.quantity})
        else:
            _move(session, target, row.product_id, row.quantity)
    lines = tuple(Line(r.product_id, r.quantity) for r in rows)
    return Settlement(Reservation(order_id, target, lines), bool(moving))


def release_in(session: Session, order_id: str) -> Settlement:
    return _finish(session, order_id, "released")


def commit_in(session: Session, order_id: str) -> Settlement:
    return _finish(session, order_id, "committed")
