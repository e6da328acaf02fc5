"""The payment state machine, idempotent by order id, and its ledger.

Every transition appends ledger entries in the same transaction as the state change
and stages the matching event; repeating a transition that already happened is a no-op
returning the same payment; a contradicting one is a :class:`PaymentConflict`.

Rows are read and written by Core statements (authorize and capture are on every
order's path; the ORM's unit of work was a fifth of the service's CPU per order). The
:class:`Payment` objects returned are detached snapshots: change a payment here, never
through them.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from system.chassis.db import Executor, Transactions, table_of
from system.chassis.outbox import stage_in
from system.chassis.prepared import Prepared
from system.events.schemas import (
    PaymentAuthorizedV1,
    PaymentCapturedV1,
    PaymentVoidedV1,
    new_event,
)
from system.services.payments.models import LedgerEntry, Payment
from system.services.payments.provider import SimulatedProvider


class PaymentConflict(Exception):
    pass


class NoPayment(Exception):
    pass


def fingerprint(order_id: str, amount_cents: int, card_token: str) -> str:
    return hashlib.sha256(f"{order_id}\0{amount_cents}\0{card_token}".encode()).hexdigest()


_PAYMENTS = table_of(Payment)
_LEDGER = table_of(LedgerEntry)
_FIELDS = tuple(
    (attribute.key, attribute.columns[0].name)
    for attribute in Payment.__mapper__.column_attrs
    if attribute.key != "_sentinel"
)


# Built once: a statement built per call costs more than running it.
_SELECT = select(_PAYMENTS).where(_PAYMENTS.c.order_id == bindparam("the_order"))
_FIND = Prepared(_SELECT)
_FIND_FOR_UPDATE = Prepared(_SELECT.with_for_update())
_INSERT_PAYMENT = Prepared(insert(_PAYMENTS))
_INSERT_ENTRY = Prepared(insert(_LEDGER))
_SET_STATUS = Prepared(update(_PAYMENTS).where(_PAYMENTS.c.id == bindparam("the_payment")))


async def find(session: AsyncSession, order_id: str, *, for_update: bool = False) -> Payment | None:
    return await session.run_sync(find_in, order_id, for_update=for_update)


def find_in(session: Executor, order_id: str, *, for_update: bool = False) -> Payment | None:
    query = _FIND_FOR_UPDATE if for_update else _FIND
    row = query(session, {"the_order": order_id}).first()
    if row is None:
        return None
    values = row._asdict()
    return Payment(**{key: values[column] for key, column in _FIELDS})


def _enter(session: Executor, payment: Payment, kind: str, held: int, settled: int) -> None:
    _INSERT_ENTRY(
        session,
        {
            "payment_id": payment.id,
            "order_id": payment.order_id,
            "kind": kind,
            "held_cents": held,
            "settled_cents": settled,
        },
    )


PaymentEvent = type[PaymentAuthorizedV1] | type[PaymentCapturedV1] | type[PaymentVoidedV1]


def _stage(session: Executor, kind: PaymentEvent, payment: Payment) -> None:
    stage_in(
        session,
        new_event(
            kind(
                payment_id=str(payment.id),
                order_id=payment.order_id,
                amount_cents=payment.amount_cents,
            )
        ),
    )


async def authorize(
    db: Transactions,
    provider: SimulatedProvider,
    *,
    order_id: str,
    amount_cents: int,
    card_token: str,
    user_id: str,
) -> tuple[Payment, bool]:
    """Returns (payment, created). A declined card is a payment too (status declined).

    The provider is called between two transactions: the lookup runs on the reader (on
    SQLite it does not wait for the one writer), and the decision is recorded in a
    transaction of its own, so the provider's latency never holds a database connection.
    A concurrent authorization of the same order then loses the insert with an
    ``IntegrityError``; the caller answers as the winner did."""
    request = fingerprint(order_id, amount_cents, card_token)
    existing = await db.read(find_in, order_id)
    if existing is not None:
        if existing.request_fingerprint != request:
            raise PaymentConflict(f"order {order_id} was authorized with another amount or card")
        return existing, False
    decision = await provider.authorize(order_id, amount_cents, card_token)
    values = {
        "id": uuid.uuid4(),
        "order_id": order_id,
        "user_id": user_id,
        "amount_cents": amount_cents,
        "card_last4": card_token[-4:],
        "status": "authorized" if decision.approved else "declined",
        "decline_reason": decision.reason,
        "provider_reference": decision.reference,
        "request_fingerprint": request,
    }
    return await db.write(_record, values), True


def _record(session: Executor, values: dict[str, Any]) -> Payment:
    """The provider's decision: the payment, and for an approval its ledger entry and
    ``payment.authorized`` (one transaction, :meth:`Transactions.write`)."""
    _INSERT_PAYMENT(session, values)  # a concurrent twin: IntegrityError
    payment = Payment(**values)
    if payment.status == "authorized":
        _enter(session, payment, "authorize", payment.amount_cents, 0)
        _stage(session, PaymentAuthorizedV1, payment)
    return payment


@dataclass(frozen=True)
class _Move:
    source: str
    target: str
    held: int
    settled: int
    event: PaymentEvent | None


async def _transition(
    session: AsyncSession, order_id: str, move: _Move, noop_from: tuple[str, ...] = ()
) -> Payment:
    return await session.run_sync(_transition_in, order_id, move, noop_from)


def _transition_in(
    session: Session, order_id: str, move: _Move, noop_from: tuple[str, ...]
) -> Payment:
    payment = find_in(session, order_id, for_update=True)
    if payment is None:
        raise NoPayment(f"order {order_id} has no payment")
    if payment.status == move.target or payment.status in noop_from:
        return payment
    if payment.status != move.source:
        raise PaymentConflict(f"payment of order {order_id} is {payment.status}, not {move.source}")
    _SET_STATUS(session, {"the_payment": payment.id, "status": move.target})
    payment.status = move.target
    amount = payment.amount_cents
    _enter(session, payment, move.target, move.held * amount, move.settled * amount)
    if move.event is not None:
        _stage(session, move.event, payment)
    return payment


async def void(session: AsyncSession, order_id: str) -> Payment:
    """Release an authorization's hold; voiding a declined payment is a no-op."""
    return await _transition(
        session,
        order_id,
        _Move("authorized", "voided", -1, 0, PaymentVoidedV1),
        noop_from=("declined",),
    )


async def capture(session: AsyncSession, order_id: str) -> Payment:
    return await _transition(
        session, order_id, _Move("authorized", "captured", -1, 1, PaymentCapturedV1)
    )


async def refund(session: AsyncSession, order_id: str) -> Payment:
    return await _transition(session, order_id, _Move("captured", "refunded", 0, -1, None))


@dataclass(frozen=True)
class Reconciliation:
    held_cents: int
    settled_cents: int
    payments_by_status: dict[str, int]
    mismatches: list[str]


EXPECTED = {  # status → (held, settled) as multiples of the amount
    "authorized": (1, 0),
    "captured": (0, 1),
    "voided": (0, 0),
    "refunded": (0, 0),
    "declined": (0, 0),
}


async def reconcile(session: AsyncSession) -> Reconciliation:
    """Replay the ledger per payment and compare with each payment's status."""
    sums = (
        await session.execute(
            select(
                Payment.order_id,
                Payment.status,
                Payment.amount_cents,
                func.coalesce(func.sum(LedgerEntry.held_cents), 0),
                func.coalesce(func.sum(LedgerEntry.settled_cents), 0),
            )
            .outerjoin(LedgerEntry, LedgerEntry.payment_id == Payment.id)
            .group_by(Payment.id)
        )
    ).all()
    mismatches: list[str] = []
    by_status: dict[str, int] = {}
    held_total = settled_total = 0
    for order_id, status, amount, held, settled in sums:
        by_status[status] = by_status.get(status, 0) + 1
        held_total += held
        settled_total += settled
        want_held, want_settled = (m * amount for m in EXPECTED[status])
        if (held, settled) != (want_held, want_settled):
            mismatches.append(
                f"order {order_id} ({status}): held {held} settled {settled}, "
                f"expected {want_held} and {want_settled}"
            )
    return Reconciliation(held_total, settled_total, by_status, mismatches)
