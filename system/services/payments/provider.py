"""The simulated card provider: deterministic, so tests and load runs are repeatable.

| card token starts with | outcome |
|---|---|
| ``tok_decline`` | declined: ``card_declined`` |
| ``tok_insufficient`` | declined: ``insufficient_funds`` |
| ``tok_expired`` | declined: ``expired_card`` |
| anything else | approved, unless the amount exceeds ``max_amount_cents`` (``amount_limit``) |
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

DECLINES = (
    ("tok_decline", "card_declined"),
    ("tok_insufficient", "insufficient_funds"),
    ("tok_expired", "expired_card"),
)


@dataclass(frozen=True)
class Decision:
    approved: bool
    reason: str | None
    reference: str


@dataclass(frozen=True)
class SimulatedProvider:
    max_amount_cents: int
    latency_s: float = 0.0

    async def authorize(self, order_id: str, amount_cents: int, card_token: str) -> Decision:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        reference = "auth_" + hashlib.sha256(f"{order_id}:{card_token}".encode()).hexdigest()[:20]
        for prefix, reason in DECLINES:
            if card_token.startswith(prefix):
                return Decision(False, reason, reference)
        if amount_cents > self.max_amount_cents:
            return Decision(False, "amount_limit", reference)
        return Decision(True, None, reference)
