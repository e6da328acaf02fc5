"""The users service's settings (env prefix ``USERS_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from system.chassis.settings import ServiceSettings


class UsersSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="USERS_", extra="ignore", frozen=True)

    name: str = "users"
    jwt_private_key_file: Path | None = None
    """Signing key; unset means a dev key pair made once under ``<data_dir>/jwt``."""
    token_ttl_s: int = Field(3600, ge=60, le=86400)
    service_clients_file: Path | None = None
    """JSON object client id → secret of the services that may ask for a service token."""
    admin_email: str = "admin@microharness.test"
    admin_password: str | None = None
    """Seeded admin's password; unset means one is generated into ``<data_dir>``."""
