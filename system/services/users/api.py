"""The users API: register, login, me, JWKS."""

from __future__ import annotations

import hmac
import json
import uuid
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.exceptions import ClientException, NotAuthorizedException, NotFoundException
from litestar.params import JSONBody
from msgspec import Meta, Struct
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from system.chassis.auth import Principal
from system.chassis.deps import DbSession
from system.chassis.openapi import Link
from system.chassis.outbox import stage
from system.chassis.problems import problem_responses
from system.events.schemas import UserRegisteredV1, new_event
from system.services.users.models import User
from system.services.users.security import TokenIssuer, hash_password, verify_password

_NOT_AT_OR_SPACE = r"[^@\s\x1c-\x1f\x85\ufeff]"
"""``\\s`` differs between Python (the server) and ECMAScript (the schema's readers): Python
counts \x1c-\x1f and \x85 as space, ECMAScript \ufeff; excluding both keeps one meaning."""
Email = Annotated[
    str,
    Meta(
        pattern=(
            f"^{_NOT_AT_OR_SPACE}{{1,64}}@{_NOT_AT_OR_SPACE}{{1,190}}\\.{_NOT_AT_OR_SPACE}{{1,60}}$"
        ),
        max_length=320,
        examples=["ada@example.test"],
    ),
]
Password = Annotated[str, Meta(min_length=8, max_length=128)]


class Registration(Struct, forbid_unknown_fields=True):
    email: Email
    password: Password
    name: Annotated[str, Meta(max_length=200)] = ""


class Credentials(Struct, forbid_unknown_fields=True):
    email: Email
    password: Annotated[str, Meta(min_length=1, max_length=128)]


class Account(Struct):
    id: uuid.UUID
    email: str
    name: str
    role: str


class AccessToken(Struct):
    access_token: str
    token_type: str
    expires_in: int


def _account(user: User) -> Account:
    return Account(id=user.id, email=user.email, name=user.name, role=user.role)


class UsersController(Controller):
    tags = ("users",)

    @post("/register", status_code=201, responses=problem_responses(400, 409, 429))
    async def register(self, data: JSONBody[Registration], db_session: DbSession) -> Account:
        """Create a customer account; emits ``user.registered``."""
        email = data.email.lower()
        user = User(
            email=email,
            name=data.name,
            password_hash=await hash_password(data.password),
            role="customer",
        )
        db_session.add(user)
        try:
            await db_session.flush()
        except IntegrityError:
            await db_session.rollback()
            raise ClientException(
                status_code=409, detail=f"{email} is already registered"
            ) from None
        await stage(
            db_session,
            new_event(
                UserRegisteredV1(user_id=str(user.id), email=email, role="customer"),
                key=str(user.id),
            ),
        )
        return _account(user)

    @post("/login", status_code=200, responses=problem_responses(400, 401, 429))
    async def login(
        self, data: JSONBody[Credentials], db_session: DbSession, request: Request[Any, Any, Any]
    ) -> AccessToken:
        """Exchange credentials for a bearer token (RS256 JWT)."""
        issuer: TokenIssuer = request.app.state.token_issuer
        user = await db_session.scalar(select(User).where(User.email == data.email.lower()))
        if user is None or not await verify_password(user.password_hash, data.password):
            raise NotAuthorizedException(detail="wrong email or password")
        token = issuer.issue(user_id=str(user.id), role=user.role, email=user.email)
        return AccessToken(token, "bearer", int(issuer.ttl.total_seconds()))

    @get("/me", responses=problem_responses(401, 404))
    async def me(self, request: Request[Principal, Any, Any], db_session: DbSession) -> Account:
        """The caller's account."""
        try:
            account_id = uuid.UUID(request.user.user_id)
        except ValueError:  # a service token's subject (``svc:<name>``) is no account
            account_id = None
        user = await db_session.get(User, account_id) if account_id else None
        if user is None:
            raise NotFoundException(detail="the token's account no longer exists")
        return _account(user)

    @get("/.well-known/jwks.json")
    async def jwks(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        """The public keys that verify this service's tokens (RFC 7517)."""
        keys: dict[str, Any] = json.loads(request.app.state.jwks)
        return keys


LINKS = (
    Link(
        "Login",
        "POST /register",
        201,
        "POST /login",
        request_body={"email": "$request.body#/email", "password": "$request.body#/password"},
    ),
    Link(
        "Me",
        "POST /login",
        200,
        "GET /me",
        {"header.Authorization": "Bearer {$response.body#/access_token}"},
    ),
)
"""Register → login → me, for stateful tests."""


class ClientCredentials(Struct, forbid_unknown_fields=True):
    client_id: Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_]{0,30}$")]
    client_secret: Annotated[str, Meta(min_length=16, max_length=200)]


class ServiceTokenController(Controller):
    """OAuth2-style client credentials: a service of the system trades its secret for a
    short-lived token with the role ``service``."""

    tags = ("service tokens",)

    @post("/token", status_code=200, responses=problem_responses(400, 401))
    async def token(
        self, data: JSONBody[ClientCredentials], request: Request[Any, Any, Any]
    ) -> AccessToken:
        clients: dict[str, str] = request.app.state.service_clients
        expected = clients.get(data.client_id)
        if expected is None or not hmac.compare_digest(expected, data.client_secret):
            raise NotAuthorizedException(detail="unknown client or wrong secret")
        issuer: TokenIssuer = request.app.state.token_issuer
        token = issuer.issue(user_id=f"svc:{data.client_id}", role="service", email="")
        return AccessToken(token, "bearer", int(issuer.ttl.total_seconds()))
