"""The payments service's settings (env prefix ``PAYMENTS_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from system.chassis.settings import ServiceSettings


class PaymentsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PAYMENTS_", extra="ignore", frozen=True)

    name: str = "payments"
    provider_latency_ms: int = Field(0, ge=0, le=60_000)
    """Simulated provider latency added to every authorization."""
    max_amount_cents: int = Field(1_000_000, ge=1)
    """Authorizations above this amount are declined (``amount_limit``)."""
