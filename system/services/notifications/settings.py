"""The notifications service's settings (env prefix ``NOTIFICATIONS_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from system.chassis.settings import ServiceSettings


class NotificationsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFICATIONS_", extra="ignore", frozen=True)

    name: str = "notifications"
    max_page_size: int = Field(100, ge=1, le=1000)
