"""The products API: catalog (admin writes), paging and filtering, reservations."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, patch, post, put
from litestar.di import NamedDependency
from litestar.enums import MediaType
from litestar.exceptions import ClientException, NotFoundException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody, PathParameter, QueryParameter
from litestar.response.base import ASGIResponse
from msgspec import UNSET, Meta, Struct, UnsetType
from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from system.chassis.auth import Principal, requires_role
from system.chassis.db import Executor, Transactions
from system.chassis.deps import DbSession, ReadSession
from system.chassis.openapi import Link
from system.chassis.outbox import stage, stage_in
from system.chassis.paging import Offset
from system.chassis.problems import problem_responses
from system.events.schemas import (
    ProductPricedV1,
    ProductWithdrawnV1,
    StockCommittedV1,
    StockItem,
    StockReleasedV1,
    StockReservedV1,
    new_event,
)
from system.services.products import stock
from system.services.products.models import Product, ReservationLine
from system.services.products.settings import ProductsSettings
from system.services.products.views import ProductReads

MAX_CENTS = 100_000_000
PriceBound = QueryParameter(gt=-1, le=MAX_CENTS)
"""``gt=-1``, not ``ge=0``: Litestar drops a zero bound from an optional parameter's
documented schema (the contract suite found the schema allowing negative prices)."""
Cents = Annotated[int, Meta(ge=0, le=MAX_CENTS)]
Count = Annotated[int, Meta(ge=0, le=1_000_000)]
Quantity = Annotated[int, Meta(ge=1, le=1000)]
Text = Annotated[str, Meta(max_length=2000)]
Name = Annotated[str, Meta(min_length=1, max_length=200)]
Sku = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
Category = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]
OrderId = Annotated[str, PathParameter(pattern=r"^[A-Za-z0-9._-]{1,64}$")]


class NewProduct(Struct, forbid_unknown_fields=True):
    sku: Sku
    name: Name
    price_cents: Cents
    description: Text = ""
    category: Category = "general"
    initial_stock: Count = 0


class ProductChange(Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: Name | UnsetType = UNSET
    description: Text | UnsetType = UNSET
    category: Category | UnsetType = UNSET
    price_cents: Cents | UnsetType = UNSET


class Restock(Struct, forbid_unknown_fields=True):
    quantity: Quantity


class StockLevels(Struct):
    available: int
    reserved: int
    sold: int
    received: int
    """Initial stock plus restocks: ``available + reserved + sold == received`` always."""


class ProductView(Struct):
    id: uuid.UUID
    sku: str
    name: str
    description: str
    category: str
    price_cents: int
    stock: StockLevels


class ProductPage(Struct):
    items: list[ProductView]
    total: int
    limit: int
    offset: int


class ReservationItem(Struct, forbid_unknown_fields=True):
    product_id: uuid.UUID
    quantity: Quantity


class ReservationRequest(Struct, forbid_unknown_fields=True):
    items: Annotated[list[ReservationItem], Meta(min_length=1, max_length=50)]


class ReservationView(Struct):
    order_id: str
    state: str
    items: list[ReservationItem]


async def _publish_price(session: AsyncSession, product: Product) -> None:
    """``product.priced``, in the transaction that set the price: orders prices from
    these events (its own copy of the catalog's prices) instead of asking per order."""
    priced = ProductPricedV1(product_id=str(product.id), price_cents=product.price_cents)
    await stage(session, new_event(priced))


def _view(p: Product) -> ProductView:
    return ProductView(
        p.id,
        p.sku,
        p.name,
        p.description,
        p.category,
        p.price_cents,
        StockLevels(p.available, p.reserved, p.sold, p.received),
    )


def _view_of(row: tuple[Any, ...]) -> ProductView:
    pid, sku, name, description, category, price, available, reserved, sold, received = row
    return ProductView(
        pid,
        sku,
        name,
        description,
        category,
        price,
        StockLevels(available, reserved, sold, received),
    )


def _answer_of(row: tuple[Any, ...]) -> ASGIResponse:
    """A ready answer: an ``ASGIResponse`` keeps nothing per call (its header list is
    built anew each time it is sent), so one instance serves every read of the row."""
    return ASGIResponse(body=msgspec.json.encode(_view_of(row)), media_type=MediaType.JSON)


def _reservation(r: stock.Reservation) -> ReservationView:
    return ReservationView(
        r.order_id, r.state, [ReservationItem(line.product_id, line.quantity) for line in r.lines]
    )


async def _product(session: AsyncSession, product_id: uuid.UUID) -> Product:
    product = await session.get(Product, product_id)
    if product is None:
        raise NotFoundException(detail=f"no product {product_id}")
    return product


class CatalogController(Controller):
    path = "/"
    tags = ("catalog",)

    @get("/", responses=problem_responses(400, 401))
    async def list_products(
        self,
        db_read: ReadSession,
        settings: NamedDependency[ProductsSettings],
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 20,
        offset: Offset = 0,
        category: Annotated[str | None, QueryParameter(max_length=64)] = None,
        q: Annotated[
            str | None, QueryParameter(max_length=100, description="name or sku contains")
        ] = None,
        min_price: Annotated[int | None, PriceBound] = None,
        max_price: Annotated[int | None, PriceBound] = None,
        in_stock: FromQuery[bool | None] = None,
    ) -> ProductPage:
        """A page of the catalog, filtered."""
        where = []
        if category is not None:
            where.append(Product.category == category)
        if q:
            like = f"%{q.lower()}%"
            where.append(
                or_(func.lower(Product.name).like(like), func.lower(Product.sku).like(like))
            )
        if min_price is not None:
            where.append(Product.price_cents >= min_price)
        if max_price is not None:
            where.append(Product.price_cents <= max_price)
        if in_stock is not None:
            where.append(Product.available > 0 if in_stock else Product.available == 0)
        limit = min(limit, settings.max_page_size)
        total = await db_read.scalar(select(func.count()).select_from(Product).where(*where))
        rows = await db_read.scalars(
            select(Product).where(*where).order_by(Product.id).limit(limit).offset(offset)
        )
        return ProductPage([_view(p) for p in rows], total or 0, limit, offset)

    @get(
        "/{product_id:uuid}",
        responses={
            200: ResponseSpec(ProductView, description="Request fulfilled, document follows"),
            **problem_responses(401, 404),
        },
    )
    async def get_product(
        self, product_id: FromPath[uuid.UUID], request: Request[Any, Any, Any]
    ) -> ASGIResponse:
        """One product with its stock levels."""
        # the hottest read of the system: the reader from the app's state (neither a
        # dependency nor the per-request State copy), and the answer cached with its row
        reads: ProductReads = request.app.state.product_reads
        answer = await reads.answer(product_id, _answer_of)
        if answer is None:
            raise NotFoundException(detail=f"no product {product_id}")
        return answer

    @post(
        "/",
        status_code=201,
        guards=[requires_role("admin")],
        responses=problem_responses(400, 401, 403, 409),
    )
    async def create_product(
        self, data: JSONBody[NewProduct], db_session: DbSession
    ) -> ProductView:
        """Add a product (admin)."""
        product = Product(
            sku=data.sku,
            name=data.name,
            description=data.description,
            category=data.category,
            price_cents=data.price_cents,
            available=data.initial_stock,
            reserved=0,
            sold=0,
            received=data.initial_stock,
        )
        db_session.add(product)
        try:
            await db_session.flush()
        except IntegrityError:
            await db_session.rollback()
            raise ClientException(status_code=409, detail=f"sku {data.sku} exists") from None
        await _publish_price(db_session, product)
        return _view(product)

    @patch(
        "/{product_id:uuid}",
        guards=[requires_role("admin")],
        responses=problem_responses(400, 401, 403, 404),
    )
    async def update_product(
        self, product_id: FromPath[uuid.UUID], data: JSONBody[ProductChange], db_session: DbSession
    ) -> ProductView:
        """Change a product's catalog fields (admin); stock moves only by reservations
        and restocking."""
        product = await _product(db_session, product_id)
        repriced = data.price_cents is not UNSET and data.price_cents != product.price_cents
        for field in ("name", "description", "category", "price_cents"):
            value = getattr(data, field)
            if value is not UNSET:
                setattr(product, field, value)
        await db_session.flush()
        if repriced:
            await _publish_price(db_session, product)
        return _view(product)

    @delete(
        "/{product_id:uuid}",
        status_code=204,
        guards=[requires_role("admin")],
        responses=problem_responses(401, 403, 404, 409),
    )
    async def delete_product(self, product_id: FromPath[uuid.UUID], db_session: DbSession) -> None:
        """Remove a product (admin); refused while any unit is reserved or was sold."""
        product = await _product(db_session, product_id)
        if product.reserved or product.sold:
            raise ClientException(status_code=409, detail="the product has reserved or sold units")
        held = await db_session.scalar(
            select(func.count())
            .select_from(ReservationLine)
            .where(ReservationLine.product_id == product_id)
        )
        if held:
            raise ClientException(
                status_code=409, detail="the product has reservation history (released orders)"
            )
        await db_session.delete(product)
        await stage(db_session, new_event(ProductWithdrawnV1(product_id=str(product_id))))

    @post(
        "/{product_id:uuid}/restock",
        guards=[requires_role("admin")],
        responses=problem_responses(400, 401, 403, 404),
    )
    async def restock(
        self, product_id: FromPath[uuid.UUID], data: JSONBody[Restock], db_session: DbSession
    ) -> ProductView:
        """Add units to the available stock (admin)."""
        product = await _product(db_session, product_id)
        await db_session.execute(
            update(Product)
            .where(Product.id == product_id)
            .values(
                available=Product.available + data.quantity,
                received=Product.received + data.quantity,
            )
        )
        await db_session.refresh(product)
        return _view(product)


def _stock_event(kind: type[Any], reservation: stock.Reservation) -> Any:
    items = [
        StockItem(product_id=str(line.product_id), quantity=line.quantity)
        for line in reservation.lines
    ]
    return new_event(kind(order_id=reservation.order_id, items=items))


def _reserve(session: Executor, order_id: str, lines: list[stock.Line]) -> stock.Reservation:
    """Reserve, and stage ``stock.reserved`` for a new reservation (a repeat stages
    nothing), in one transaction (:meth:`Transactions.write`)."""
    result, created = stock.reserve_in(session, order_id, lines)
    if created:
        stage_in(session, _stock_event(StockReservedV1, result))
    return result


class ReservationController(Controller):
    """Stock held for an order; every call is idempotent by order id."""

    path = "/reservations"
    tags = ("reservations",)

    @put("/{order_id:str}", responses=problem_responses(400, 401, 404, 409))
    async def reserve(
        self,
        order_id: OrderId,
        data: JSONBody[ReservationRequest],
        request: Request[Principal, Any, Any],
    ) -> ReservationView:
        """Hold stock for every item of an order, all or nothing (409 when short)."""
        lines = [stock.Line(i.product_id, i.quantity) for i in data.items]
        db: Transactions = request.app.state.transactions
        try:
            result = await db.write(_reserve, order_id, lines)
        except stock.UnknownProduct as exc:
            raise NotFoundException(detail=str(exc)) from None
        except (stock.OutOfStock, stock.ReservationConflict) as exc:
            raise ClientException(status_code=409, detail=str(exc)) from None
        except IntegrityError:  # a concurrent call for the same order won: answer as it did
            existing = await db.read(stock.get_reservation_in, order_id)
            if existing is None or existing.lines != stock._merge(lines):
                raise ClientException(status_code=409, detail="concurrent reservation") from None
            return _reservation(existing)
        return _reservation(result)

    @get("/{order_id:str}", responses=problem_responses(401, 404))
    async def get_reservation(self, order_id: OrderId, db_session: DbSession) -> ReservationView:
        found = await stock.get_reservation(db_session, order_id)
        if found is None:
            raise NotFoundException(detail=f"order {order_id} holds no reservation")
        return _reservation(found)

    @post("/{order_id:str}/release", status_code=200, responses=problem_responses(401, 409))
    async def release(self, order_id: OrderId, db_session: DbSession) -> ReservationView:
        """Give the order's units back to available stock (idempotent)."""
        return await _finish(db_session, order_id, stock.release_in, StockReleasedV1)

    @post("/{order_id:str}/commit", status_code=200, responses=problem_responses(401, 409))
    async def commit(self, order_id: OrderId, db_session: DbSession) -> ReservationView:
        """Turn the order's reserved units into sold ones (idempotent)."""
        return await _finish(db_session, order_id, stock.commit_in, StockCommittedV1)


_NEW = "$response.body#/id"
_SAME = "$request.path.product_id"
_ORDER = "$response.body#/order_id"

LINKS = (
    Link("GetProduct", "POST /", 201, "GET /{product_id}", {"product_id": _NEW}),
    Link("UpdateProduct", "POST /", 201, "PATCH /{product_id}", {"product_id": _NEW}),
    Link("RestockProduct", "POST /", 201, "POST /{product_id}/restock", {"product_id": _NEW}),
    Link("DeleteProduct", "POST /", 201, "DELETE /{product_id}", {"product_id": _NEW}),
    Link(
        "ReserveProduct",
        "POST /",
        201,
        "PUT /reservations/{order_id}",
        request_body={"items": [{"product_id": _NEW, "quantity": 1}]},
    ),
    Link(
        "GetUpdatedProduct", "PATCH /{product_id}", 200, "GET /{product_id}", {"product_id": _SAME}
    ),
    Link(
        "DeleteUpdatedProduct",
        "PATCH /{product_id}",
        200,
        "DELETE /{product_id}",
        {"product_id": _SAME},
    ),
    Link(
        "GetRestockedProduct",
        "POST /{product_id}/restock",
        201,
        "GET /{product_id}",
        {"product_id": _SAME},
    ),
    Link(
        "GetDeletedProduct", "DELETE /{product_id}", 204, "GET /{product_id}", {"product_id": _SAME}
    ),
    Link(
        "GetReservation",
        "PUT /reservations/{order_id}",
        200,
        "GET /reservations/{order_id}",
        {"order_id": _ORDER},
    ),
    Link(
        "ReleaseReservation",
        "PUT /reservations/{order_id}",
        200,
        "POST /reservations/{order_id}/release",
        {"order_id": _ORDER},
    ),
    Link(
        "CommitReservation",
        "PUT /reservations/{order_id}",
        200,
        "POST /reservations/{order_id}/commit",
        {"order_id": _ORDER},
    ),
    Link(
        "GetReservedProduct",
        "PUT /reservations/{order_id}",
        200,
        "GET /{product_id}",
        {"product_id": "$response.body#/items/0/product_id"},
    ),
)
"""Create → read → update → restock → reserve → settle → delete, for stateful tests."""


async def settle(
    session: AsyncSession,
    order_id: str,
    operation: Callable[[Session, str], stock.Settlement],
    event: type[Any],
) -> stock.Reservation:
    """Release or commit the order's reservation (``operation``: ``stock.release_in`` or
    ``stock.commit_in``) and stage ``event`` if anything moved; a repeat stages nothing.
    :class:`stock.ReservationConflict` (and :class:`stock.NoReservation`) propagate: the
    API answers 409, the consumer logs. One greenlet (``run_sync``) for all of it."""
    return await session.run_sync(_settle, order_id, operation, event)


def _settle(
    session: Session,
    order_id: str,
    operation: Callable[[Session, str], stock.Settlement],
    event: type[Any],
) -> stock.Reservation:
    settled = operation(session, order_id)
    if settled.moved:
        stage_in(session, _stock_event(event, settled.reservation))
    return settled.reservation


async def _finish(
    session: AsyncSession,
    order_id: str,
    operation: Callable[[Session, str], stock.Settlement],
    event: type[Any],
) -> ReservationView:
    try:
        return _reservation(await settle(session, order_id, operation, event))
    except stock.ReservationConflict as exc:
        raise ClientException(status_code=409, detail=str(exc)) from None
