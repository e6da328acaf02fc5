"""The payments service's tables: one payment per order, and the ledger."""

from __future__ import annotations

import uuid

from advanced_alchemy.base import UUIDv7AuditBase, UUIDv7Base
from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column


class Payment(UUIDv7AuditBase):
    """States: authorized → captured → refunded, authorized → voided; or declined."""

    __tablename__ = "payment"

    order_id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    user_id: Mapped[str] = mapped_column(String(64), default="")
    amount_cents: Mapped[int] = mapped_column(Integer)
    card_last4: Mapped[str] = mapped_column(String(4), default="")
    status: Mapped[str] = mapped_column(String(16))
    decline_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    provider_reference: Mapped[str] = mapped_column(String(64), default="")
    request_fingerprint: Mapped[str] = mapped_column(String(64), default="")
    """Hash of the authorize request, so a retry with another body is told apart."""


class LedgerEntry(UUIDv7Base):
    """Append-only. ``held`` and ``settled`` are signed movements of money:
    authorize +held; void -held; capture -held +settled; refund -settled."""

    __tablename__ = "ledger_entry"

    payment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("payment.id"), index=True)
    order_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    held_cents: Mapped[int] = mapped_column(Integer, default=0)
    settled_cents: Mapped[int] = mapped_column(Integer, default=0)
