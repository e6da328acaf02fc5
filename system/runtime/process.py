"""What the supervisor runs: a :class:`ProcessSpec` per process, and readiness probes."""

from __future__ import annotations

import asyncio
import functools
import pwd
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

Probe = Callable[[], Awaitable[bool]]
Hook = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class ProcessSpec:
    """One supervised process. Plain data plus three optional async callables."""

    name: str
    argv: tuple[str, ...]
    role: str = "infrastructure"
    """``infrastructure`` or ``service``; services stop first and start last."""
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    ports: Mapping[str, int] = field(default_factory=dict)
    after: tuple[str, ...] = ()
    """Names that must be ready before this process first starts."""
    probe: Probe | None = None
    """Readiness check; ``None`` means ready once started."""
    prepare: Hook | None = None
    """Runs before every start (e.g. format Kafka storage when it is missing)."""
    on_ready: Hook | None = None
    """Runs after every transition to ready (e.g. create Kafka topics)."""
    stop_grace: float = 10.0
    """Seconds between SIGTERM and SIGKILL on shutdown."""
    user: str | None = None
    """Account to run as (with its primary group, no supplementary ones); ``None`` means
    the supervisor's own. Only root can switch: PostgreSQL refuses to run as root."""


def as_user(user: str | None) -> dict[str, Any]:
    """``Popen`` arguments that run a child as ``user`` (its primary group, no root groups).

    The switch happens in the forked child before ``preexec_fn``, so the parent-death
    signal (which the kernel clears on a change of credentials) is set after it and holds.
    """
    if user is None:
        return {}
    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every probe's client. httpx builds a new one per client by
    default, loading the CA bundle each time: 23 ms of CPU, which at a probe per process
    every 2 s was ~12% of a core of the supervisor, all the stack's life."""
    return ssl.create_default_context()


def http_probe(url: str, *, timeout: float = 1.0) -> Probe:
    """Ready when ``url`` answers a 2xx."""

    async def probe() -> bool:
        try:
            async with httpx.AsyncClient(timeout=timeout, trust_env=False, verify=_tls()) as client:
                response = await client.get(url)
        except httpx.HTTPError:
            return False
        return response.is_success

    return probe


def tcp_probe(port: int, host: str = "127.0.0.1", *, timeout: float = 1.0) -> Probe:
    """Ready when a TCP connection to ``host:port`` succeeds."""

    async def probe() -> bool:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except (OSError, TimeoutError):
            return False
        writer.close()
        await writer.wait_closed()
        return True

    return probe
