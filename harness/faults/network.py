"""Local network faults: delay or abort on one mesh edge (Envoy's fault filter, driven by
runtime keys), and TCP toxics in front of Kafka or PostgreSQL (Toxiproxy).

Percentages and Toxiproxy's ``toxicity`` are drawn by Envoy and Toxiproxy themselves, not
by the harness's seeded RNG: the record keeps the percentage that was asked for.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, ClassVar

from harness.faults.base import Fault, FaultError, register
from harness.faults.local import LocalEnv
from system.runtime.config.envoy import fault_keys

TOXIC_TYPES = (
    "latency",
    "bandwidth",
    "slow_close",
    "timeout",
    "reset_peer",
    "slicer",
    "limit_data",
)


def require_edge(env: LocalEnv, service: str) -> None:
    envoy = env.entry("envoy")
    edges = sorted(
        k.removeprefix("mesh.") for k in (envoy or {}).get("ports", {}) if k.startswith("mesh.")
    )
    if envoy is None or service not in edges:
        raise FaultError(f"no mesh edge into {service!r}; edges: {', '.join(edges) or 'none'}")


def require_percent(percent: float) -> None:
    if not 0 <= percent <= 100:
        raise FaultError(f"percent must be within 0-100, not {percent}")


@dataclass
class _EdgeFault(Fault[LocalEnv]):
    service: str

    def target(self) -> str:
        return f"mesh edge into {self.service}"

    def overrides(self) -> dict[str, str]:
        raise NotImplementedError

    def apply(self, env: LocalEnv, rng: random.Random) -> None:
        require_edge(env, self.service)
        env.set_runtime(self.overrides())

    def revert(self, env: LocalEnv) -> None:
        env.set_runtime(dict.fromkeys(self.overrides(), ""))  # back to the config: 0 %


@register("local")
@dataclass
class EdgeDelay(_EdgeFault):
    """Delay ``percent`` % of the calls into ``service`` by ``delay_ms``."""

    kind: ClassVar[str] = "edge_delay"
    delay_ms: int = 1000
    percent: float = 100

    def overrides(self) -> dict[str, str]:
        require_percent(self.percent)
        keys = fault_keys(self.service)
        return {
            keys["delay_percent"]: f"{self.percent:g}",
            keys["delay_duration_ms"]: str(self.delay_ms),
        }


@register("local")
@dataclass
class EdgeAbort(_EdgeFault):
    """Answer ``percent`` % of the calls into ``service`` with ``status``, unanswered by it."""

    kind: ClassVar[str] = "edge_abort"
    status: int = 503
    percent: float = 100

    def overrides(self) -> dict[str, str]:
        require_percent(self.percent)
        keys = fault_keys(self.service)
        return {
            keys["abort_percent"]: f"{self.percent:g}",
            keys["abort_http_status"]: str(self.status),
        }


@register("local")
@dataclass
class TcpToxic(Fault[LocalEnv]):
    """One Toxiproxy toxic on proxy ``proxy`` (``kafka``; ``postgres`` with
    ``--database postgres``), e.g. ``latency`` (``latency``, ``jitter`` ms) or ``timeout``
    (``timeout`` ms, 0 = never answer); removed on revert."""

    kind: ClassVar[str] = "tcp_toxic"
    proxy: str
    type: str
    stream: str = "downstream"
    toxicity: float = 1.0
    attributes: dict[str, Any] = field(default_factory=dict)
    _name: str | None = field(default=None, init=False, repr=False)

    def target(self) -> str:
        return f"toxiproxy {self.proxy}"

    def apply(self, env: LocalEnv, rng: random.Random) -> None:
        if self.type not in TOXIC_TYPES:
            raise FaultError(f"toxic type {self.type!r} is not one of {', '.join(TOXIC_TYPES)}")
        if self.stream not in ("upstream", "downstream"):
            raise FaultError(f"stream must be upstream or downstream, not {self.stream!r}")
        proxies = env.request("GET", f"{env.toxiproxy}/proxies", "list Toxiproxy proxies").json()
        if self.proxy not in proxies:
            known = ", ".join(sorted(proxies)) or "none"
            raise FaultError(
                f"no Toxiproxy proxy {self.proxy!r}: {known} (postgres needs --database postgres)"
            )
        name = env.toxic_name(self.type)
        toxic = {
            "name": name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
            "attributes": self.attributes,
        }
        env.request("POST", f"{env.toxiproxy}/proxies/{self.proxy}/toxics", "add toxic", json=toxic)
        self._name = name

    def revert(self, env: LocalEnv) -> None:
        if self._name is not None:
            url = f"{env.toxiproxy}/proxies/{self.proxy}/toxics/{self._name}"
            env.request("DELETE", url, "remove toxic", missing_ok=True)
