"""Who the contract tests are: real accounts of the ``users`` service, real RS256 tokens.

The admin logs in with the seeded account; a customer registers (a fresh e-mail each
run) and logs in, the way any client does. Tokens are fetched once per run and mode.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from typing import Any

import requests
from requests.structures import CaseInsensitiveDict
from schemathesis import AuthContext, Case
from schemathesis.specs.openapi.schemas import OpenApiSchema

Caller = Callable[..., requests.Response]
"""``call(service, method, path, **requests_kwargs)``."""

ROLES = ("admin", "customer")

ROLE_OF = {"users": "customer", "orders": "customer"}
"""Whose token a service's cases carry; others get the admin's (every admin route works).
Customers are who place orders and own a ``/me``."""


def role_of(service: str) -> str:
    return ROLE_OF.get(service, "admin")


class IdentityError(RuntimeError):
    """Logging in or registering failed: the contract tests cannot authenticate."""


class Identities:
    def __init__(self, call: Caller, admin_email: str, admin_password: str) -> None:
        self._call = call
        self._admin = (admin_email, admin_password)
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()

    def token(self, role: str) -> str:
        with self._lock:
            if role not in self._tokens:
                self._tokens[role] = self._fetch(role)
            return self._tokens[role]

    def _fetch(self, role: str) -> str:
        if role == "admin":
            email, password = self._admin
        elif role == "customer":
            email = f"contracts-{secrets.token_hex(6)}@example.test"
            password = secrets.token_urlsafe(12)
            registered = self._call(
                "users", "POST", "/register", json={"email": email, "password": password}
            )
            if registered.status_code != 201:
                raise IdentityError(
                    f"register answered {registered.status_code}: {registered.text}"
                )
        else:
            raise ValueError(f"no identity for the role {role!r}; use one of {ROLES}")
        login = self._call("users", "POST", "/login", json={"email": email, "password": password})
        if login.status_code != 200:
            raise IdentityError(f"{role} login answered {login.status_code}: {login.text}")
        token: str = login.json()["access_token"]
        return token


def attach_bearer(schema: OpenApiSchema, token: Callable[[], str]) -> None:
    """Every case of ``schema`` carries ``Authorization: Bearer <token()>`` (as explicit
    auth, so the ``ignored_auth`` check also probes the request without it)."""

    class Bearer:
        def get(self, case: Case[Any], context: AuthContext) -> str:
            return token()

        def set(self, case: Case[Any], data: str, context: AuthContext) -> None:
            headers: CaseInsensitiveDict[Any] = CaseInsensitiveDict(case.headers or {})
            headers["Authorization"] = f"Bearer {data}"
            case.headers = headers

    schema.auth(refresh_interval=None)(Bearer)
