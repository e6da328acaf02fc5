"""The orders service's tables: the event store, the read model, idempotency keys, the
saga leases, and its copy of the catalog's prices."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from advanced_alchemy.base import BigIntBase, UUIDv7Base
from advanced_alchemy.types import DateTimeUTC, JsonB
from sqlalchemy import Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column


class OrderEvent(BigIntBase):
    """Append-only. ``(order_id, version)`` is unique: two writers that loaded the same
    version cannot both append (optimistic concurrency)."""

    __tablename__ = "order_event"
    __table_args__ = (UniqueConstraint("order_id", "version", name="order_event_version"),)

    order_id: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(40))
    data: Mapped[dict[str, Any]] = mapped_column(JsonB)
    occurred_at: Mapped[datetime] = mapped_column(DateTimeUTC)


class OrderView(UUIDv7Base):
    """The read model: one row per order, rewritten in the transaction that appends."""

    __tablename__ = "order_view"

    order_id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    user_id: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    total_cents: Mapped[int] = mapped_column(Integer)
    items: Mapped[list[dict[str, Any]]] = mapped_column(JsonB)
    reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    payment_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    version: Mapped[int] = mapped_column(Integer)
    placed_at: Mapped[datetime] = mapped_column(DateTimeUTC)
    updated_at: Mapped[datetime] = mapped_column(DateTimeUTC)


class IdempotencyKey(UUIDv7Base):
    __tablename__ = "idempotency_key"
    __table_args__ = (UniqueConstraint("user_id", "key", name="idempotency_key_once"),)

    user_id: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    order_id: Mapped[str] = mapped_column(String(64))


class SagaLease(UUIDv7Base):
    __tablename__ = "saga_lease"

    order_id: Mapped[str] = mapped_column(String(64), unique=True)
    owner: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(DateTimeUTC)


class CatalogPrice(UUIDv7Base):
    """The catalog's price of each product, as ``product.priced`` events told it: orders'
    own copy (event-carried state), so placing an order asks products nothing. A product
    that is not here yet (or never was) is priced by asking products."""

    __tablename__ = "catalog_price"

    product_id: Mapped[str] = mapped_column(String(64), unique=True)
    price_cents: Mapped[int] = mapped_column(Integer)
