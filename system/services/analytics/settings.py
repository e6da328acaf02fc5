"""The analytics service's settings (env prefix ``ANALYTICS_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from system.chassis.settings import ServiceSettings


class AnalyticsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ANALYTICS_", extra="ignore", frozen=True)

    name: str = "analytics"
    rebuild_timeout_s: float = Field(120.0, gt=0)
    """How long ``POST /rebuild`` may read the log before it gives up (503)."""
