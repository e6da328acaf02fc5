"""The orders API: place (202 + Location, Idempotency-Key), get, list, history."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.exceptions import ClientException, NotFoundException
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter
from msgspec import Meta, Struct
from opentelemetry import propagate
from sqlalchemy import Row, bindparam, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from system.chassis.auth import Principal
from system.chassis.db import Executor, Transactions, table_of
from system.chassis.deps import ReadSession
from system.chassis.openapi import Link
from system.chassis.outbound import UpstreamError
from system.chassis.paging import Offset
from system.chassis.prepared import Prepared
from system.chassis.problems import problem_response, problem_responses
from system.events.schemas import uuid7
from system.services.orders import catalog, store
from system.services.orders.aggregate import DomainEvent, OrderState
from system.services.orders.leases import Lease, SagaLeases
from system.services.orders.models import IdempotencyKey, OrderView
from system.services.orders.settings import OrdersSettings

Quantity = Annotated[int, Meta(ge=1, le=100)]
CardToken = Annotated[str, Meta(pattern=r"^tok_[A-Za-z0-9_]{4,60}$", examples=["tok_visa_4242"])]
_KEYS = table_of(IdempotencyKey)
# Built once: a statement built per call costs more than running it.
_SEEN = Prepared(
    select(_KEYS.c.request_hash, _KEYS.c.order_id).where(
        _KEYS.c.user_id == bindparam("the_user"), _KEYS.c.key == bindparam("the_key")
    )
)
_INSERT_KEY = Prepared(insert(_KEYS))
IdemKey = Annotated[str, HeaderParameter(name="Idempotency-Key", min_length=8, max_length=200)]


class LineItem(Struct, forbid_unknown_fields=True):
    product_id: Annotated[str, Meta(pattern=r"^[0-9a-fA-F-]{36}$")]
    quantity: Quantity


class PlaceOrder(Struct, forbid_unknown_fields=True):
    items: Annotated[list[LineItem], Meta(min_length=1, max_length=20)]
    card_token: CardToken


class OrderLine(Struct):
    product_id: str
    quantity: int
    unit_price_cents: int


class OrderResource(Struct):
    order_id: str
    user_id: str
    status: str
    total_cents: int
    items: list[OrderLine]
    reason: str | None
    payment_id: str | None
    version: int


class OrderPage(Struct):
    items: list[OrderResource]
    total: int
    limit: int
    offset: int


class HistoryEntry(Struct):
    version: int
    type: str
    data: dict[str, Any]
    occurred_at: str


_VIEWS = table_of(OrderView)
_VIEW_OF = Prepared(
    select(*(_VIEWS.c[name] for name in OrderResource.__struct_fields__)).where(
        _VIEWS.c.order_id == bindparam("the_order")
    )
)


def _resource(v: OrderView | Row[Any]) -> OrderResource:
    return OrderResource(
        v.order_id,
        v.user_id,
        v.status,
        v.total_cents,
        [OrderLine(**i) for i in v.items],
        v.reason,
        v.payment_id,
        v.version,
    )


def _placed(state: OrderState) -> OrderResource:
    """The read model's row of an order just placed, as the append wrote it."""
    return OrderResource(
        state.order_id,
        state.user_id,
        str(state.status),
        state.total_cents,
        [OrderLine(**i) for i in state.items],
        None,
        None,
        state.version,
    )


def _accepted(order: OrderResource, settings: OrdersSettings) -> Response[Any]:
    return Response(
        order, status_code=202, headers={"Location": f"{settings.public_path}/{order.order_id}"}
    )


def _place(
    session: Executor, leases: SagaLeases, placed: DomainEvent, key: dict[str, str]
) -> tuple[OrderState, Lease]:
    """The placing transaction (:meth:`Transactions.write`): the order's first event
    (with its read model row and ``order.placed`` in the outbox), its saga's lease and
    its Idempotency-Key."""
    state = store.append_in(session, OrderState(key["order_id"]), [placed])
    lease = leases.hold(session, key["order_id"])
    _INSERT_KEY(session, key)
    return state, lease


Seen = tuple[str, str, OrderResource | None]


def _seen(session: Executor, user: Principal, key: str) -> Seen | None:
    """An earlier placement with this Idempotency-Key: its request hash, its order id and
    the order if this user may see it."""
    seen = _SEEN(session, {"the_user": user.user_id, "the_key": key}).first()
    if seen is None:
        return None
    return seen.request_hash, seen.order_id, _visible_in(session, seen.order_id, user)


Placing = Callable[[dict[str, int]], tuple[DomainEvent, dict[str, str]]]
"""The order's ``placed`` event and its Idempotency-Key row, from the lines' prices."""


@dataclass(frozen=True)
class _FromCopy:
    """What :func:`_place_from_copy` did: found the key used before (``seen``), placed
    the order (``made``), or neither, with the prices the copy does hold (``known``)."""

    seen: Seen | None = None
    made: tuple[OrderState, Lease] | None = None
    known: dict[str, int] = field(default_factory=dict)


def _place_from_copy(
    session: Executor,
    leases: SagaLeases,
    user: Principal,
    key: str,
    wanted: Collection[str],
    placing: Placing,
) -> _FromCopy:
    """The whole placement in one transaction when orders' copy of the catalog prices
    every line (the usual case): an earlier use of the Idempotency-Key, or else the
    placing transaction. Neither when a product is missing from the copy: nothing is
    written, and the caller asks products for the missing prices, holding no
    connection."""
    seen = _seen(session, user, key)
    if seen is not None:
        return _FromCopy(seen=seen)
    prices = catalog.prices_in(session, wanted)
    if len(prices) < len(wanted):
        return _FromCopy(known=prices)
    return _FromCopy(made=_place(session, leases, *placing(prices)))


def _lines(wanted: dict[str, int], prices: dict[str, int]) -> list[dict[str, Any]]:
    return [
        {"product_id": pid, "quantity": quantity, "unit_price_cents": prices[pid]}
        for pid, quantity in wanted.items()
    ]


def _request_hash(body: PlaceOrder) -> str:
    return hashlib.sha256(msgspec.json.encode(body)).hexdigest()


def _visible_in(session: Executor, order_id: str, user: Principal) -> OrderResource | None:
    """The order's read model row if ``user`` may see it."""
    view = _VIEW_OF(session, {"the_order": order_id}).first()
    if view is None or (view.user_id != user.user_id and user.role != "admin"):
        return None
    return _resource(view)


async def _visible(db: AsyncSession, order_id: str, user: Principal) -> OrderResource:
    view = await db.run_sync(_visible_in, order_id, user)
    if view is None:
        raise NotFoundException(detail=f"no order {order_id}")
    return view


LINKS = (
    Link("GetOrder", "POST /", 202, "GET /{order_id}", {"order_id": "$response.body#/order_id"}),
    Link(
        "GetOrderHistory",
        "POST /",
        202,
        "GET /{order_id}/history",
        {"order_id": "$response.body#/order_id"},
    ),
)
"""Place → read, for stateful tests."""


class OrdersController(Controller):
    path = "/"
    tags = ("orders",)

    @post("/", status_code=202, responses=problem_responses(400, 401, 409, 422, 503))
    async def place(
        self,
        data: JSONBody[PlaceOrder],
        idempotency_key: IdemKey,
        request: Request[Principal, Any, Any],
    ) -> Response[Any]:
        """Place an order; the saga finishes it asynchronously (poll the ``Location``)."""
        settings: OrdersSettings = request.app.state.settings
        db: Transactions = request.app.state.transactions
        user = request.user
        digest = _request_hash(data)
        wanted: dict[str, int] = {}
        for line in data.items:
            wanted[line.product_id] = wanted.get(line.product_id, 0) + line.quantity
        order_id = str(uuid7())
        carrier: dict[str, str] = {}
        propagate.inject(carrier)

        def placing(prices: dict[str, int]) -> tuple[DomainEvent, dict[str, str]]:
            lines = _lines(wanted, prices)
            placed = store.event(
                "placed",
                user_id=user.user_id,
                items=lines,
                total_cents=sum(i["quantity"] * i["unit_price_cents"] for i in lines),
                card_token=data.card_token,
                trace=carrier,
            )
            key_row = {
                "user_id": user.user_id,
                "key": idempotency_key,
                "request_hash": digest,
                "order_id": order_id,
            }
            return placed, key_row

        saga = request.app.state.saga
        try:
            done = await db.write(
                _place_from_copy, saga.leases, user, idempotency_key, wanted, placing
            )
            seen, made = done.seen, done.made
            if seen is None and made is None:  # a product orders' copy does not hold
                # priced by products with no connection held (on SQLite the one writer
                # serves every saga step and the relay); a twin that lands meanwhile is
                # caught by the key's unique constraint
                missing = [pid for pid in wanted if pid not in done.known]
                try:
                    asked = await self._price(missing, request)
                except UpstreamError:
                    return problem_response(503, "the catalog is unavailable; nothing was ordered")
                if isinstance(asked, Response):
                    return asked
                made = await db.write(_place, saga.leases, *placing({**done.known, **asked}))
        except IntegrityError:  # the same key raced in from a concurrent retry
            raise ClientException(
                status_code=409,
                detail="a concurrent request used this Idempotency-Key; retry to get its order",
            ) from None
        if seen is not None:
            request_hash, seen_order, view = seen
            if request_hash != digest:
                raise ClientException(
                    status_code=409, detail="this Idempotency-Key was used for another order"
                )
            if view is None:
                raise NotFoundException(detail=f"no order {seen_order}")
            return _accepted(view, settings)
        assert made is not None
        state, lease = made
        saga.kick(order_id, state, lease)
        return _accepted(_placed(state), settings)

    async def _price(
        self, product_ids: list[str], request: Request[Any, Any, Any]
    ) -> dict[str, int] | Response[Any]:
        """The prices of ``product_ids`` (those orders' copy of the catalog lacks), asked
        of products; a 422 problem for a product products does not know."""
        mesh, token = request.app.state.mesh, request.app.state.service_token
        headers = await token.headers()
        responses = await asyncio.gather(
            *(mesh.request("products", "GET", f"/{pid}", headers=headers) for pid in product_ids)
        )
        prices = {}
        for pid, response in zip(product_ids, responses, strict=True):
            if response.status_code == 404:
                return problem_response(422, f"no product {pid}", product_id=pid)
            if response.status_code != 200:
                raise UpstreamError("products", f"pricing answered {response.status_code}")
            prices[pid] = response.json()["price_cents"]
        return prices

    @get("/{order_id:str}", responses=problem_responses(401, 404))
    async def get_order(
        self, order_id: FromPath[str], db_read: ReadSession, request: Request[Principal, Any, Any]
    ) -> OrderResource:
        """The order as the read model has it (customers see their own)."""
        return await _visible(db_read, order_id, request.user)

    @get("/", responses=problem_responses(400, 401))
    async def list_orders(
        self,
        db_read: ReadSession,
        request: Request[Principal, Any, Any],
        limit: Annotated[int, QueryParameter(ge=1, le=100)] = 20,
        offset: Offset = 0,
        status: Annotated[str | None, QueryParameter(max_length=16)] = None,
    ) -> OrderPage:
        """A page of orders, newest first (customers: their own; admins: all)."""
        where = []
        if request.user.role != "admin":
            where.append(OrderView.user_id == request.user.user_id)
        if status is not None:
            where.append(OrderView.status == status)
        total = await db_read.scalar(select(func.count()).select_from(OrderView).where(*where))
        rows = await db_read.scalars(
            select(OrderView)
            .where(*where)
            .order_by(OrderView.placed_at.desc(), OrderView.order_id)
            .limit(limit)
            .offset(offset)
        )
        return OrderPage([_resource(v) for v in rows], total or 0, limit, offset)

    @get("/{order_id:str}/history", responses=problem_responses(401, 404))
    async def history(
        self, order_id: FromPath[str], db_read: ReadSession, request: Request[Principal, Any, Any]
    ) -> list[HistoryEntry]:
        """The order's events, oldest first: its state is their fold."""
        await _visible(db_read, order_id, request.user)
        events = await store.history(db_read, order_id)
        return [
            HistoryEntry(
                i + 1,
                e.type,
                {k: v for k, v in e.data.items() if k not in ("card_token", "trace")},
                e.occurred_at.isoformat(),
            )
            for i, e in enumerate(events)
        ]
