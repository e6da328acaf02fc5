"""Where the contract tests send their requests: the apps in-process, or the gateway.

Both give the same two things: a service's schemathesis schema (authenticated, its base
URL set) and a plain ``requests`` call to a service (for logging in). The tests never
know which one they have.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import requests
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi
from schemathesis.specs.openapi.schemas import OpenApiSchema

from contracts.identities import Identities, attach_bearer
from contracts.settings import Mode, schemathesis_config
from harness.inprocess import ADMIN_EMAIL, ADMIN_PASSWORD, InProcessSystem, build_system
from harness.target import Target, resolve

SCHEMA_PATH = "/schema/openapi.json"
"""Where Litestar serves a service's OpenAPI document (``/api/v1/<service>`` in front)."""


class ContractTarget(Protocol):
    mode: Mode
    config: SchemathesisConfig
    identities: Identities

    def call(self, service: str, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One request to ``service`` (``path`` below its root)."""
        ...

    def load(self, service: str) -> OpenApiSchema:
        """The service's schema as served, with no auth attached."""
        ...


def schema_for(target: ContractTarget, service: str, role: str) -> OpenApiSchema:
    """The service's schema, every case sent with a token of ``role``."""
    schema = target.load(service)
    attach_bearer(schema, functools.partial(target.identities.token, role))
    return schema


@dataclass
class InProcessTarget:
    """Every app in this process (schemathesis' ASGI client starts each lifespan once)."""

    system: InProcessSystem
    config: SchemathesisConfig
    mode: Mode = Mode.IN_PROCESS
    identities: Identities = field(init=False)

    def __post_init__(self) -> None:
        self.identities = Identities(self.call, ADMIN_EMAIL, ADMIN_PASSWORD)

    def _client(self, service: str) -> asgi.ASGIClient:
        app: Any = self.system.apps[service]
        return asgi.get_client(app)

    def call(self, service: str, method: str, path: str, **kwargs: Any) -> requests.Response:
        with self._client(service) as client:
            return client.request(method, path, **kwargs)

    def load(self, service: str) -> OpenApiSchema:
        for callee in self.system.meshes.get(service, _NO_MESH).apps:
            with self._client(callee):  # its lifespan runs from now on, in the same loop
                pass
        return schemathesis.openapi.from_asgi(
            SCHEMA_PATH, self.system.apps[service], config=self.config
        )


class _NoMesh:
    apps: dict[str, Any] = {}  # noqa: RUF012 - read only


_NO_MESH = _NoMesh()


@dataclass
class LiveTarget:
    """The running system, through its gateway."""

    target: Target
    config: SchemathesisConfig
    mode: Mode = Mode.LIVE
    identities: Identities = field(init=False)
    session: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self) -> None:
        password = self.target.admin_password or ""
        self.identities = Identities(self.call, self.target.admin_email, password)

    def url(self, service: str, path: str = "") -> str:
        return f"{self.target.api_url}/{service}{path}"

    def call(self, service: str, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 10)
        return self.session.request(method, self.url(service, path), **kwargs)

    def load(self, service: str) -> OpenApiSchema:
        token = self.identities.token("admin")  # the gateway wants a token for the schema too
        schema = schemathesis.openapi.from_url(
            self.url(service, SCHEMA_PATH),
            config=self.config,
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        schema.config.update(base_url=self.url(service))
        return schema


def open_target(mode: Mode, folder: Path, live: Target | None = None) -> ContractTarget:
    """The target of ``mode``: the apps built in ``folder``, or ``live`` (the harness
    plugin's ``target``), else what ``harness.target.resolve()`` names (its
    :class:`TargetError` says what is missing)."""
    config = schemathesis_config(mode)
    if mode is Mode.LIVE:
        return LiveTarget(live or resolve(), config)
    return InProcessTarget(build_system(folder), config)
