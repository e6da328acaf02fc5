"""The payments service's settings (env prefix ``PAYMENTS_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from system.chassis.settings import ServiceSettings


class PaymentsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PAYMENTS_", extra="ignore", frozen=True)

    name: str = "payments"
    outbox_linger_ms: int = Field(100, ge=0, le=1000)
    """Longer than the chassis' 15 ms: payment.* events feed analytics and notifications,
    and the saga waits for the authorization's HTTP answer, never for these events. Fewer
    relay cycles (a read, a produce request, a marking transaction each), more events each."""
    provider_latency_ms: int = Field(0, ge=0, le=60_000)
    """Simulated provider latency added to every authorization."""
    max_amount_cents: int = Field(1_000_000, ge=1)
    """Authorizations above this amount are declined (``amount_limit``)."""
