"""Where the system under test is: a local stack (the supervisor's state) or a deployed one.

Suites never hard-code an address; they ask :func:`resolve` for a :class:`Target`.

* ``HARNESS_GATEWAY_URL`` set → a **remote** target; ``HARNESS_PROMETHEUS_URL``,
  ``HARNESS_JAEGER_URL`` (the query service), ``HARNESS_ADMIN_EMAIL`` /
  ``HARNESS_ADMIN_PASSWORD`` and ``HARNESS_KUBE_CONTEXT`` complete it.
* otherwise → the **local** stack named ``HARNESS_STACK`` (default ``default``), which must
  be running (``harness up``); its ports, pids and seeded admin come from its state folder.

Exceptions::

    TargetError            one line saying what is missing and how to fix it
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from system.runtime.paths import StackPaths
from system.runtime.state import read_state

ADMIN_EMAIL = "admin@microharness.test"


class TargetError(RuntimeError):
    """The target is missing, half-configured or unreachable (the message says the fix)."""


@dataclass(frozen=True)
class LocalStack:
    """What only a local target has: its files and live state (for faults and logs)."""

    paths: StackPaths
    state: Mapping[str, Any]

    @property
    def ports(self) -> Mapping[str, int]:
        ports: Mapping[str, int] = self.state["ports"]
        return ports

    def processes(self) -> list[dict[str, Any]]:
        """The supervisor's current view of every process (re-read: pids change on restart)."""
        state = read_state(self.paths) or {}
        processes: list[dict[str, Any]] = state.get("processes", [])
        return processes


@dataclass(frozen=True)
class Target:
    """One system under test, reached over the network only."""

    name: str
    gateway_url: str
    """The gateway's root (the API lives under ``/api/v1/<service>``)."""
    prometheus_url: str
    jaeger_url: str
    """Jaeger's query service root (``/api/v3/...`` below it)."""
    admin_email: str = ADMIN_EMAIL
    admin_password: str | None = field(default=None, repr=False)
    local: LocalStack | None = None
    kube_context: str | None = None

    @property
    def api_url(self) -> str:
        return f"{self.gateway_url.rstrip('/')}/api/v1"

    @property
    def is_local(self) -> bool:
        return self.local is not None

    def describe(self) -> dict[str, str]:
        """What the report's environment page shows (no secrets)."""
        return {
            "target": self.name,
            "gateway": self.gateway_url,
            "prometheus": self.prometheus_url,
            "jaeger": self.jaeger_url,
        }


def local_target(paths: StackPaths, state: Mapping[str, Any]) -> Target:
    """The target of a running local stack, from its state (``control.wait_ready``'s)."""
    ports = state["ports"]
    password_file = paths.data / "users" / "admin-password"
    password = password_file.read_text().strip() if password_file.exists() else None
    host = "http://127.0.0.1"
    return Target(
        name=f"local:{paths.root.name}",
        gateway_url=f"{host}:{ports['gateway']}",
        prometheus_url=f"{host}:{ports['prometheus']}",
        jaeger_url=f"{host}:{ports['jaeger_query']}",
        admin_password=password,
        local=LocalStack(paths, state),
    )


def remote_target(env: Mapping[str, str]) -> Target:
    missing = [v for v in ("HARNESS_PROMETHEUS_URL", "HARNESS_JAEGER_URL") if not env.get(v)]
    if missing:
        raise TargetError(
            f"HARNESS_GATEWAY_URL is set, so the target is remote, but {' and '.join(missing)} "
            "is not: set it to the deployed system's URL"
        )
    return Target(
        name=f"remote:{env['HARNESS_GATEWAY_URL']}",
        gateway_url=env["HARNESS_GATEWAY_URL"].rstrip("/"),
        prometheus_url=env["HARNESS_PROMETHEUS_URL"].rstrip("/"),
        jaeger_url=env["HARNESS_JAEGER_URL"].rstrip("/"),
        admin_email=env.get("HARNESS_ADMIN_EMAIL", ADMIN_EMAIL),
        admin_password=env.get("HARNESS_ADMIN_PASSWORD"),
        kube_context=env.get("HARNESS_KUBE_CONTEXT"),
    )


def resolve(env: Mapping[str, str] | None = None, *, home: Path | None = None) -> Target:
    """The target the environment names (see the module docstring)."""
    env = os.environ if env is None else env
    if env.get("HARNESS_GATEWAY_URL"):
        return remote_target(env)
    stack = env.get("HARNESS_STACK", "default")
    try:
        paths = StackPaths.for_stack(stack, home)
    except ValueError as exc:
        raise TargetError(str(exc)) from exc
    state = read_state(paths)
    if state is None or not state.get("all_ready"):
        raise TargetError(
            f"no running local stack {stack!r}: start one with `harness --stack {stack} up` "
            "(or `make up`), or set HARNESS_GATEWAY_URL to test a deployed system"
        )
    return local_target(paths, state)


def check_reachable(target: Target, *, timeout: float = 5.0) -> None:
    """Fail with one line per unreachable endpoint (before a suite spends minutes failing)."""
    probes = {
        "gateway": f"{target.api_url}/users/.well-known/jwks.json",
        "prometheus": f"{target.prometheus_url}/-/ready",
        "jaeger": f"{target.jaeger_url}/api/v3/services",
    }
    problems = []
    with httpx.Client(timeout=timeout) as client:
        for what, url in probes.items():
            try:
                response = client.get(url)
            except httpx.HTTPError as exc:
                problems.append(f"{what} at {url} is unreachable ({type(exc).__name__})")
                continue
            if response.status_code >= 400:
                problems.append(f"{what} at {url} answered {response.status_code}")
    if problems:
        raise TargetError(f"target {target.name}: " + "; ".join(problems))
