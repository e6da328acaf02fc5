"""The products service's settings (env prefix ``PRODUCTS_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from system.chassis.settings import ServiceSettings


class ProductsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PRODUCTS_", extra="ignore", frozen=True)

    name: str = "products"
    outbox_linger_ms: int = Field(100, ge=0, le=1000)
    """Longer than the chassis' 15 ms: stock.* events feed analytics, and the saga waits for
    the reservation's HTTP answer, never for these events. Fewer relay cycles (a read, a
    produce request, a marking transaction each), more events each."""
    max_page_size: int = Field(100, ge=1, le=1000)
