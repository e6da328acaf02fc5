"""The users service, assembled on the chassis."""

from __future__ import annotations

import json

from litestar import Litestar
from sqlalchemy import select

from system.chassis.app import ServiceParts, create_app
from system.chassis.keys import KeyFiles, jwks_of
from system.chassis.settings import load_settings
from system.services.users.api import LINKS, ServiceTokenController, UsersController
from system.services.users.models import User
from system.services.users.security import TokenIssuer, admin_password, hash_password
from system.services.users.settings import UsersSettings

PUBLIC = ("/register", "/login", "/token", "/.well-known/jwks.json")


def build(settings: UsersSettings) -> Litestar:
    if settings.jwt_public_key_file is None:
        keys = KeyFiles(settings.data_dir / "jwt").ensure()
        settings = settings.model_copy(update={"jwt_public_key_file": keys.public})
    assert settings.jwt_public_key_file is not None
    issuer = TokenIssuer.from_settings(settings)
    public_pem = settings.jwt_public_key_file.read_bytes()

    async def seed_admin(app: Litestar) -> None:
        async with app.state.events.session_maker() as session, session.begin():
            exists = await session.scalar(select(User).where(User.email == settings.admin_email))
            if exists is None:
                session.add(
                    User(
                        email=settings.admin_email,
                        name="admin",
                        role="admin",
                        password_hash=await hash_password(admin_password(settings)),
                    )
                )

    app = create_app(
        settings,
        ServiceParts(
            route_handlers=[UsersController, ServiceTokenController],
            public_paths=PUBLIC,
            on_startup=[seed_admin],
            links=LINKS,
            description="Accounts and tokens.",
        ),
    )
    app.state.token_issuer = issuer
    app.state.jwks = json.dumps(jwks_of(public_pem))
    app.state.service_clients = (
        json.loads(settings.service_clients_file.read_text())
        if settings.service_clients_file is not None
        else {}
    )
    return app


def create() -> Litestar:
    """Granian's factory: settings from the ``USERS_*`` environment."""
    return build(load_settings(UsersSettings))
