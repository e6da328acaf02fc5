"""The products service's settings (env prefix ``PRODUCTS_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from system.chassis.settings import ServiceSettings


class ProductsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PRODUCTS_", extra="ignore", frozen=True)

    name: str = "products"
    max_page_size: int = Field(100, ge=1, le=1000)
