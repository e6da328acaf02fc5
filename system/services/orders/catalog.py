"""Orders' copy of the catalog's prices, kept from products' ``product.priced`` and
``product.withdrawn`` events (``products.catalog``, a compacted topic: a new orders
database reads the latest price of every product from offset 0).

Placing an order prices its lines here, in its placing transaction (with the lookup of
its Idempotency-Key), instead of one ``GET`` to products per line through the mesh: a
call, an Envoy hop and a request in products fewer per order, and an order can be
placed while products is unreachable (its saga's reservation waits for products, and
cancels if it never comes).
A product this copy does not hold (created moments ago, or before its events existed)
is priced by asking products, as before. The price is the catalog's as orders last
heard it, normally milliseconds old; the reservation still checks that the product
exists and has the stock.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from system.chassis.db import Executor, table_of
from system.chassis.prepared import Prepared
from system.events.schemas import Event
from system.services.orders.models import CatalogPrice

_PRICES = table_of(CatalogPrice)
_PRICE_OF = Prepared(  # one product per statement: an expanding IN is compiled per call
    select(_PRICES.c.price_cents).where(_PRICES.c.product_id == bindparam("the_product"))
)
_FORGET = Prepared(delete(_PRICES).where(_PRICES.c.product_id == bindparam("the_product")))
_REMEMBER = Prepared(insert(_PRICES))


def prices_in(session: Executor, product_ids: Collection[str]) -> dict[str, int]:
    """The known prices of ``product_ids`` (the unknown ones are missing)."""
    prices = {}
    for product_id in product_ids:
        price = _PRICE_OF(session, {"the_product": product_id}).scalar()
        if price is not None:
            prices[product_id] = price
    return prices


def _priced(session: Executor, product_id: str, price_cents: int) -> None:
    _FORGET(session, {"the_product": product_id})
    _REMEMBER(session, {"product_id": product_id, "price_cents": price_cents})


def _withdrawn(session: Executor, product_id: str) -> None:
    _FORGET(session, {"the_product": product_id})


async def on_product_priced(session: AsyncSession, event: Event[Any]) -> None:
    await session.run_sync(_priced, event.data.product_id, event.data.price_cents)


async def on_product_withdrawn(session: AsyncSession, event: Event[Any]) -> None:
    await session.run_sync(_withdrawn, event.data.product_id)
