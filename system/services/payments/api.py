"""The payments API: authorize, void, capture, refund (idempotent by order id), ledger."""

from __future__ import annotations

import functools
import uuid
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.exceptions import ClientException, NotFoundException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, PathParameter
from msgspec import Meta, Struct
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from system.chassis.auth import Principal, requires_role
from system.chassis.deps import DbSession
from system.chassis.openapi import Link
from system.chassis.problems import problem_response, problem_responses
from system.services.payments import ledger
from system.services.payments.models import Payment

OrderId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
OrderPath = Annotated[str, PathParameter(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
CardToken = Annotated[str, Meta(pattern=r"^tok_[A-Za-z0-9_]{4,60}$", examples=["tok_visa_4242"])]
Cents = Annotated[int, Meta(ge=1, le=100_000_000)]


class Authorization(Struct, forbid_unknown_fields=True):
    order_id: OrderId
    amount_cents: Cents
    card_token: CardToken
    user_id: Annotated[str, Meta(max_length=64)] | None = None
    """Whose payment it is, when a service (the order saga) authorizes for a customer."""


class PaymentView(Struct):
    id: uuid.UUID
    order_id: str
    user_id: str
    amount_cents: int
    status: str
    card_last4: str
    decline_reason: str | None = None


class ReconciliationView(Struct):
    consistent: bool
    held_cents: int
    settled_cents: int
    payments_by_status: dict[str, int]
    mismatches: list[str]


def _payer(data: Authorization, caller: Principal) -> str:
    return data.user_id if caller.role == "service" and data.user_id else caller.user_id


def _view(p: Payment) -> PaymentView:
    return PaymentView(
        p.id, p.order_id, p.user_id, p.amount_cents, p.status, p.card_last4, p.decline_reason
    )


async def _apply(session: AsyncSession, operation: Any, order_id: str) -> PaymentView:
    try:
        return _view(await operation(session, order_id))
    except ledger.NoPayment as exc:
        raise NotFoundException(detail=str(exc)) from None
    except ledger.PaymentConflict as exc:
        raise ClientException(status_code=409, detail=str(exc)) from None


class PaymentsController(Controller):
    path = "/"
    tags = ("payments",)

    @post(
        "/authorize",
        status_code=201,
        responses={
            200: ResponseSpec(
                PaymentView,
                description="The order was authorized before: that payment, unchanged",
                generate_examples=False,
            ),
            **problem_responses(400, 401, 402, 409),
        },
    )
    async def authorize(
        self,
        data: JSONBody[Authorization],
        request: Request[Principal, Any, Any],
    ) -> Response[Any]:
        """Hold the amount on the card (201); a retry answers 200 with the same payment, a
        declined card 402 (the same on retry)."""
        attempt = functools.partial(
            ledger.authorize,
            request.app.state.transactions,
            request.app.state.provider,
            order_id=data.order_id,
            amount_cents=data.amount_cents,
            card_token=data.card_token,
            user_id=_payer(data, request.user),
        )
        try:
            try:
                payment, created = await attempt()
            except IntegrityError:  # a concurrent retry of the same order won the insert:
                payment, created = await attempt()  # answer as that one did
        except ledger.PaymentConflict as exc:
            raise ClientException(status_code=409, detail=str(exc)) from None
        if payment.status == "declined":  # recorded: a retry gets the same answer
            return problem_response(
                402,
                f"the card was declined: {payment.decline_reason}",
                reason=payment.decline_reason,
                payment_id=str(payment.id),
            )
        return Response(_view(payment), status_code=201 if created else 200)

    @get("/{order_id:str}", responses=problem_responses(401, 404))
    async def get_payment(self, order_id: OrderPath, db_session: DbSession) -> PaymentView:
        payment = await ledger.find(db_session, order_id)
        if payment is None:
            raise NotFoundException(detail=f"order {order_id} has no payment")
        return _view(payment)

    @post("/{order_id:str}/void", status_code=200, responses=problem_responses(401, 404, 409))
    async def void(self, order_id: OrderPath, db_session: DbSession) -> PaymentView:
        """Release the hold (idempotent; a no-op on a declined payment)."""
        return await _apply(db_session, ledger.void, order_id)

    @post(
        "/{order_id:str}/capture",
        status_code=200,
        guards=[requires_role("admin", "service")],
        responses=problem_responses(401, 403, 404, 409),
    )
    async def capture(self, order_id: OrderPath, db_session: DbSession) -> PaymentView:
        """Settle the held amount (admin; normally done on ``order.confirmed``)."""
        return await _apply(db_session, ledger.capture, order_id)

    @post(
        "/{order_id:str}/refund",
        status_code=200,
        guards=[requires_role("admin", "service")],
        responses=problem_responses(401, 403, 404, 409),
    )
    async def refund(self, order_id: OrderPath, db_session: DbSession) -> PaymentView:
        """Give settled money back (admin; idempotent)."""
        return await _apply(db_session, ledger.refund, order_id)


_ORDER = "$response.body#/order_id"

_FOLLOW_UPS = (
    ("GetPayment", "GET /{order_id}"),
    ("VoidPayment", "POST /{order_id}/void"),
    ("CapturePayment", "POST /{order_id}/capture"),
    ("RefundPayment", "POST /{order_id}/refund"),
)
LINKS = (
    *(
        Link(f"{name}{status}", "POST /authorize", status, target, {"order_id": _ORDER})
        for status in (200, 201)
        for name, target in _FOLLOW_UPS
    ),
    Link(
        "RefundCaptured",
        "POST /{order_id}/capture",
        200,
        "POST /{order_id}/refund",
        {"order_id": _ORDER},
    ),
    Link("GetVoided", "POST /{order_id}/void", 200, "GET /{order_id}", {"order_id": _ORDER}),
)
"""Authorize → read / void / capture → refund, for stateful tests."""


class LedgerController(Controller):
    path = "/ledger"
    tags = ("ledger",)

    @get(
        "/reconciliation",
        guards=[requires_role("admin", "service")],
        responses=problem_responses(401, 403),
    )
    async def reconciliation(self, db_session: DbSession) -> ReconciliationView:
        """Replays the ledger against every payment's status (admin)."""
        result = await ledger.reconcile(db_session)
        return ReconciliationView(
            not result.mismatches,
            result.held_cents,
            result.settled_cents,
            result.payments_by_status,
            result.mismatches,
        )
