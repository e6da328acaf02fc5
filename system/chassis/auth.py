"""JWT verification in every service (RS256, keys issued by ``users``), and role guards.

The gateway checks tokens too, but each service verifies on its own: a request that
bypasses the gateway without a valid token gets 401.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.security.jwt import JWTAuth, Token
from msgspec import Struct

from system.chassis.settings import ServiceSettings

ROLES = ("customer", "admin")
ALWAYS_PUBLIC = ("/health", "/metrics", "/schema")


class Principal(Struct, frozen=True):
    """Who is calling, as the token says."""

    user_id: str
    role: str
    email: str = ""


async def principal_from_token(
    token: Token, _connection: ASGIConnection[Any, Any, Any, Any]
) -> Principal:
    role = str(token.extras.get("role", ""))
    if role not in ROLES:
        raise NotAuthorizedException(detail="the token carries no known role")
    return Principal(user_id=token.sub, role=role, email=str(token.extras.get("email", "")))


def jwt_auth(
    settings: ServiceSettings, public_paths: Sequence[str] = ()
) -> JWTAuth[Principal, Token]:
    """Token check for every route but the public ones."""
    if settings.jwt_public_key_file is None:
        raise ValueError(f"{settings.name}: jwt_public_key_file is not set")
    return JWTAuth[Principal, Token](
        token_secret=settings.jwt_public_key_file.read_text(),
        algorithm="RS256",
        retrieve_user_handler=principal_from_token,
        accepted_issuers=[settings.jwt_issuer],
        accepted_audiences=[settings.jwt_audience],
        require_claims=["exp", "sub", "iss", "aud"],
        exclude=[*(f"^{p}" for p in (*ALWAYS_PUBLIC, *public_paths))],
    )


def requires_role(*roles: str) -> Any:
    """A guard: the caller's role must be one of ``roles``."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
        user = connection.scope.get("user")
        if not isinstance(user, Principal):
            raise NotAuthorizedException(detail="authentication is required")
        if user.role not in roles:
            raise PermissionDeniedException(detail=f"this needs the role {' or '.join(roles)}")

    return guard
