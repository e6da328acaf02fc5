"""The products service's tables: the catalog with its stock counters, reservation lines."""

from __future__ import annotations

import uuid

from advanced_alchemy.base import UUIDv7AuditBase, UUIDv7Base
from sqlalchemy import CheckConstraint, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column


class Product(UUIDv7AuditBase):
    """A catalog entry and its stock. Every stock change is one conditional UPDATE, so
    two concurrent reservations of the last unit cannot both win and no counter goes
    negative (the CHECK constraints make the database say so too)."""

    __tablename__ = "product"
    __table_args__ = (
        CheckConstraint("available >= 0", name="product_available_not_negative"),
        CheckConstraint("reserved >= 0", name="product_reserved_not_negative"),
        CheckConstraint("sold >= 0", name="product_sold_not_negative"),
        CheckConstraint("available + reserved + sold = received", name="product_stock_conserved"),
    )

    sku: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    category: Mapped[str] = mapped_column(String(64), index=True, default="general")
    price_cents: Mapped[int] = mapped_column(Integer)
    available: Mapped[int] = mapped_column(Integer, default=0)
    reserved: Mapped[int] = mapped_column(Integer, default=0)
    sold: Mapped[int] = mapped_column(Integer, default=0)
    received: Mapped[int] = mapped_column(Integer, default=0)
    """Every unit ever put in stock (initial + restocks): the conservation law's total."""


class ReservationLine(UUIDv7Base):
    """What one order holds of one product; ``state`` moves reserved → released | committed."""

    __tablename__ = "reservation_line"
    __table_args__ = (UniqueConstraint("order_id", "product_id", name="reservation_line_once"),)

    order_id: Mapped[str] = mapped_column(String(64))
    product_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("product.id"))
    quantity: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="reserved")
