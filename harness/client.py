"""A typed async client of the gateway's API, for suites, scenarios and the invariant checker.

One :class:`Api` speaks as one principal (a bearer token); :meth:`Api.as_token` gives
another principal over the same connection pool. Responses decode into the small
``msgspec`` structs below: the client's own view of the API (it imports nothing from
the services, like any external consumer), lenient to fields it does not know.

Every mutating request carries a fresh W3C ``traceparent`` so a test knows the trace id
of what it started (``Placed.trace_id``) and can read that trace back from Jaeger.

Exceptions::

    ApiError        an answer other than the ones the call expects: status + problem body
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
import msgspec

from harness.target import Target, TargetError

TERMINAL = frozenset({"CONFIRMED", "CANCELLED"})
T = TypeVar("T")


class ApiError(RuntimeError):
    def __init__(self, response: httpx.Response) -> None:
        self.status_code = response.status_code
        try:
            self.problem: Any = response.json()
        except ValueError:
            self.problem = response.text[:500]
        request = response.request
        super().__init__(f"{request.method} {request.url} → {self.status_code}: {self.problem}")


class StockLevels(msgspec.Struct):
    available: int
    reserved: int
    sold: int
    received: int


class Product(msgspec.Struct):
    id: str
    sku: str
    name: str
    price_cents: int
    stock: StockLevels
    category: str = "general"


class OrderLine(msgspec.Struct):
    product_id: str
    quantity: int
    unit_price_cents: int


class Order(msgspec.Struct):
    order_id: str
    user_id: str
    status: str
    total_cents: int
    items: list[OrderLine]
    version: int
    reason: str | None = None
    payment_id: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


class HistoryEntry(msgspec.Struct):
    version: int
    type: str
    data: dict[str, Any]
    occurred_at: str


class Placed(msgspec.Struct):
    """The 202 of ``POST /orders``; ``trace_id`` is the trace the saga runs in."""

    order_id: str
    status_code: int
    location: str
    trace_id: str
    idempotency_key: str


class Payment(msgspec.Struct):
    order_id: str
    amount_cents: int
    status: str
    decline_reason: str | None = None


class Notification(msgspec.Struct):
    user_id: str
    event_id: str
    event_type: str
    subject: str


class Summary(msgspec.Struct):
    orders_placed: int
    orders_confirmed: int
    orders_cancelled: int
    revenue_cents: int
    captured_cents: int
    cancellations_by_reason: dict[str, int]
    events_by_type: dict[str, int]


class Account(msgspec.Struct):
    id: str
    email: str
    role: str


def new_traceparent() -> tuple[str, str]:
    """A sampled W3C trace context: (header value, trace id)."""
    trace_id = secrets.token_hex(16)
    return f"00-{trace_id}-{secrets.token_hex(8)}-01", trace_id


class Api:
    """The gateway's API as one principal."""

    def __init__(self, http: httpx.AsyncClient, token: str | None = None) -> None:
        self.http = http
        self.token = token

    def as_token(self, token: str | None) -> Api:
        return Api(self.http, token)

    # -- plumbing ---------------------------------------------------------------------

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return {**headers, **(extra or {})}

    async def request(
        self, method: str, path: str, *, headers: Mapping[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        """The raw response, for tests that check statuses themselves."""
        return await self.http.request(method, path, headers=self._headers(headers), **kwargs)

    async def _call(
        self,
        method: str,
        path: str,
        kind: type[T],
        *,
        expect: Sequence[int] = (200,),
        **kwargs: Any,
    ) -> T:
        response = await self.request(method, path, **kwargs)
        if response.status_code not in expect:
            raise ApiError(response)
        return msgspec.json.decode(response.content, type=kind)

    async def _pages(self, path: str, kind: type[T], *, limit: int, **params: Any) -> list[T]:
        items: list[T] = []
        while True:
            page = await self._call(
                "GET", path, dict[str, Any], params={**params, "limit": limit, "offset": len(items)}
            )
            batch = msgspec.convert(page["items"], list[kind])  # type: ignore[valid-type]
            items.extend(batch)
            if not batch or len(items) >= page["total"]:
                return items

    # -- users --------------------------------------------------------------------------

    async def register(self, email: str, password: str, name: str = "") -> Account:
        return await self._call(
            "POST",
            "/users/register",
            Account,
            expect=(201,),
            json={"email": email, "password": password, "name": name},
        )

    async def login(self, email: str, password: str) -> Api:
        """A client speaking as that account."""
        body = await self._call(
            "POST", "/users/login", dict[str, Any], json={"email": email, "password": password}
        )
        return self.as_token(str(body["access_token"]))

    async def new_customer(self) -> Api:
        """Register a fresh customer and log in as them."""
        email = f"customer-{secrets.token_hex(6)}@microharness.test"
        password = secrets.token_urlsafe(16)
        await self.register(email, password, "Scenario customer")
        return await self.login(email, password)

    async def me(self) -> Account:
        return await self._call("GET", "/users/me", Account)

    # -- products -----------------------------------------------------------------------

    async def create_product(
        self, *, stock: int, price_cents: int = 1500, name: str = "Harness lamp", sku: str = ""
    ) -> Product:
        body = {
            "sku": sku or f"H-{secrets.token_hex(5)}",
            "name": name,
            "price_cents": price_cents,
            "initial_stock": stock,
        }
        return await self._call("POST", "/products/", Product, expect=(201,), json=body)

    async def product(self, product_id: str) -> Product:
        return await self._call("GET", f"/products/{product_id}", Product)

    async def products(self) -> list[Product]:
        return await self._pages("/products/", Product, limit=1000)

    async def restock(self, product_id: str, quantity: int) -> Product:
        return await self._call(
            "POST",
            f"/products/{product_id}/restock",
            Product,
            expect=(200, 201),
            json={"quantity": quantity},
        )

    # -- orders -------------------------------------------------------------------------

    async def place_order(
        self,
        items: Mapping[str, int] | Sequence[tuple[str, int]],
        *,
        card: str = "tok_visa_4242",
        idempotency_key: str | None = None,
    ) -> Placed:
        """``POST /orders`` (202); ``items`` maps product id → quantity."""
        pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
        key = idempotency_key or secrets.token_hex(12)
        traceparent, trace_id = new_traceparent()
        response = await self.request(
            "POST",
            "/orders/",
            headers={"Idempotency-Key": key, "traceparent": traceparent},
            json={
                "items": [{"product_id": p, "quantity": q} for p, q in pairs],
                "card_token": card,
            },
        )
        if response.status_code != 202:
            raise ApiError(response)
        return Placed(
            order_id=str(response.json()["order_id"]),
            status_code=response.status_code,
            location=response.headers.get("location", ""),
            trace_id=trace_id,
            idempotency_key=key,
        )

    async def order(self, order_id: str) -> Order:
        return await self._call("GET", f"/orders/{order_id}", Order)

    async def orders(self, status: str | None = None) -> list[Order]:
        """Every order this principal sees (an admin: all of them)."""
        params = {"status": status} if status else {}
        return await self._pages("/orders/", Order, limit=100, **params)

    async def history(self, order_id: str) -> list[HistoryEntry]:
        return await self._call("GET", f"/orders/{order_id}/history", list[HistoryEntry])

    async def wait_terminal(
        self, order_id: str, *, within: float = 60.0, interval: float = 0.1
    ) -> Order:
        """Poll the order until CONFIRMED or CANCELLED; a timeout says where it stood."""
        deadline = time.monotonic() + within
        last: Order | str = "never read"
        while time.monotonic() < deadline:
            try:
                order = await self.order(order_id)
            except (ApiError, httpx.HTTPError) as exc:  # not projected yet, or a blip
                last = repr(exc)
            else:
                if order.terminal:
                    return order
                last = order
            await asyncio.sleep(interval)
        raise AssertionError(f"order {order_id} not terminal after {within:.0f}s; last: {last}")

    # -- payments, notifications, analytics -------------------------------------------

    async def payment(self, order_id: str) -> Payment | None:
        response = await self.request("GET", f"/payments/{order_id}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise ApiError(response)
        return msgspec.json.decode(response.content, type=Payment)

    async def notifications(self, user_id: str | None = None) -> list[Notification]:
        """The caller's own notifications, or (admin) ``user_id``'s, or (admin) everyone's."""
        if user_id is None and self.token and (await self.me()).role != "admin":
            return await self._pages("/notifications/me", Notification, limit=1000)
        params = {"user_id": user_id} if user_id else {}
        return await self._pages("/notifications/", Notification, limit=1000, **params)

    async def summary(self) -> Summary:
        return await self._call("GET", "/analytics/summary", Summary)

    async def reconciliation(self) -> dict[str, Any]:
        return await self._call("GET", "/payments/ledger/reconciliation", dict[str, Any])


@asynccontextmanager
async def connect(
    target: Target,
    *,
    request_timeout: float = 15.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[Api]:
    """An anonymous :class:`Api` on the target's gateway (log in from it)."""
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
    async with httpx.AsyncClient(
        base_url=target.api_url, timeout=request_timeout, limits=limits, transport=transport
    ) as http:
        yield Api(http)


async def admin(api: Api, target: Target) -> Api:
    """The target's seeded admin (its password from the local stack or
    ``HARNESS_ADMIN_PASSWORD``)."""
    if not target.admin_password:
        raise TargetError(f"target {target.name}: no admin password; set HARNESS_ADMIN_PASSWORD")
    return await api.login(target.admin_email, target.admin_password)
