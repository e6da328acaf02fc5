"""The orders service's settings (env prefix ``ORDERS_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from system.chassis.settings import ServiceSettings


class OrdersSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ORDERS_", extra="ignore", frozen=True)

    name: str = "orders"
    public_path: str = "/api/v1/orders"
    """Where the gateway exposes this service (for ``Location`` headers)."""
    step_timeout_s: float = Field(10.0, gt=0)
    """A saga step that keeps failing this long is given up: the order is compensated."""
    lease_s: float = Field(15.0, gt=0)
    """How long a replica owns a saga without renewing; another replica takes over after."""
    sweep_interval_s: float = Field(1.0, gt=0)
    """How often a replica looks for unfinished sagas nobody drives (e.g. after a crash)."""
    max_parallel_sagas: int = Field(64, ge=1, le=1000)
