"""The one topology definition: services, replicas, upstream calls, Kafka topics and ports.

Every other piece of the runtime (Envoy, Prometheus and Toxiproxy configs, the process
list) is generated from a :class:`Topology`, so the stack cannot drift from it. All ports
derive from one base, so two stacks with bases at least :data:`PORT_SPAN` apart coexist.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_TOPOLOGY_FILE = Path(__file__).resolve().parents[1] / "topology.toml"
PORT_SPAN = 1000
MAX_SERVICES = 50
MAX_REPLICAS = 9
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
_TOPIC = re.compile(r"^[a-z][a-z0-9._-]{0,100}$")
DATABASES = ("sqlite", "postgres")
"""What the services keep their data in: a SQLite file each, or one database each on the
stack's PostgreSQL server."""


class TopologyError(ValueError):
    """The topology definition is invalid; the message names the field and the fix."""


@dataclass(frozen=True)
class Ports:
    """Every fixed port of a stack, as an offset from ``base`` (see :meth:`from_base`)."""

    base: int
    gateway: int
    envoy_admin: int
    prometheus: int
    jaeger_query: int
    jaeger_query_grpc: int
    jaeger_otlp_http: int
    jaeger_otlp_grpc: int
    jaeger_health: int
    jaeger_metrics: int
    toxiproxy: int
    kafka: int
    """What clients dial: Toxiproxy in front of the broker's external listener."""
    kafka_external: int
    kafka_internal: int
    kafka_controller: int
    # new ports go last, so the offsets above never move
    postgres: int
    """What clients dial: Toxiproxy in front of the PostgreSQL server (stacks using it)."""
    postgres_server: int

    @classmethod
    def from_base(cls, base: int) -> Ports:
        names = [f.name for f in fields(cls) if f.name != "base"]
        return cls(base, *(base + offset for offset, _ in enumerate(names)))

    def mesh(self, service: ServiceDef) -> int:
        """The Envoy mesh listener in front of ``service`` (callers dial this)."""
        return self.base + 100 + service.index

    def replica(self, service: ServiceDef, replica: int) -> int:
        """The port replica ``replica`` (1-based) of ``service`` listens on."""
        return self.base + 200 + service.index * 10 + replica

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "base"}


@dataclass(frozen=True)
class ServiceDef:
    """One service of the system: how to start a replica and whom it calls."""

    name: str
    index: int
    replicas: int = 1
    command: tuple[str, ...] = ()
    """argv template; ``{python}``, ``{port}``, ``{service}`` and ``{replica}`` are filled in."""
    health_path: str = "/health/ready"
    calls: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    public_paths: tuple[str, ...] = ()
    """Paths (after ``/api/v1/<name>``) the gateway lets through without a token."""
    issues_tokens: bool = False
    """This service signs the stack's JWTs: it gets the private key, the gateway the JWKS."""

    def argv(self, *, python: str, port: int, replica: int) -> list[str]:
        template = self.command or (
            "{python}",
            "-m",
            f"system.services.{self.name}",
        )
        values = {"python": python, "port": port, "service": self.name, "replica": replica}
        return [part.format(**values) for part in template]

    def replica_names(self) -> list[str]:
        return [f"{self.name}-{r}" for r in range(1, self.replicas + 1)]


@dataclass(frozen=True)
class TopicDef:
    name: str
    partitions: int = 3
    compacted: bool = False
    """Kafka keeps the latest message of each key (``cleanup.policy=compact``) instead of
    dropping old messages by age: a topic that is a table (the catalog's prices), which a
    new consumer reads whole from offset 0."""


def _topic(name: str, spec: Any) -> TopicDef:
    """``"name" = 3`` (partitions) or ``"name" = { partitions = 3, compacted = true }``."""
    if isinstance(spec, dict):
        unknown = set(spec) - {"partitions", "compacted"}
        if unknown:
            raise TopologyError(f"topic {name}: unknown keys {sorted(unknown)}")
        return TopicDef(name, int(spec.get("partitions", 3)), bool(spec.get("compacted", False)))
    return TopicDef(name, int(spec))


@dataclass(frozen=True)
class GatewayPolicy:
    """The edge's promises: per-client rate limit, request size limit, route timeout."""

    client_rps: int = 200
    """Tokens per second (and burst) of each client's bucket, keyed by ``x-client-id``."""
    shared_rps: int = 1000
    """The bucket shared by requests that name no client."""
    max_request_bytes: int = 1024 * 1024
    timeout_s: float = 10.0
    retries: int = 2
    trace_sampling_percent: float = 100.0
    """Share of requests the gateway starts a sampled trace for; services follow the
    gateway's decision (parent-based sampling). 100 for tests, lower for load runs."""

    def validate(self) -> None:
        if min(self.client_rps, self.shared_rps, self.max_request_bytes) < 1:
            raise TopologyError(f"gateway policy {self} has a non-positive limit")
        if self.timeout_s <= 0:
            raise TopologyError("gateway.timeout_s must be positive")
        if not 0 <= self.trace_sampling_percent <= 100:
            raise TopologyError("gateway.trace_sampling_percent must be within 0..100")


@dataclass(frozen=True)
class Proxy:
    """A Toxiproxy proxy: clients connect to ``listen``; it forwards to ``upstream``."""

    name: str
    listen: int
    upstream: int


@dataclass(frozen=True)
class Topology:
    port_base: int
    services: tuple[ServiceDef, ...] = ()
    topics: tuple[TopicDef, ...] = ()
    gateway: GatewayPolicy = GatewayPolicy()
    database: str = "sqlite"
    """One of :data:`DATABASES`; a stack-level choice (``harness up --database``)."""

    @property
    def uses_postgres(self) -> bool:
        return self.database == "postgres"

    @property
    def ports(self) -> Ports:
        return Ports.from_base(self.port_base)

    @property
    def token_issuer(self) -> ServiceDef | None:
        return next((s for s in self.services if s.issues_tokens), None)

    @property
    def proxies(self) -> tuple[Proxy, ...]:
        ports = self.ports
        kafka = Proxy("kafka", ports.kafka, ports.kafka_external)
        if self.uses_postgres:
            return (kafka, Proxy("postgres", ports.postgres, ports.postgres_server))
        return (kafka,)

    def all_ports(self) -> dict[str, int]:
        """Every port the stack binds, named: fixed ones, mesh listeners, replicas."""
        ports = self.ports
        named = ports.as_dict()
        for s in self.services:
            named[f"mesh.{s.name}"] = ports.mesh(s)
            for r in range(1, s.replicas + 1):
                named[f"{s.name}-{r}"] = ports.replica(s, r)
        return named

    def service(self, name: str) -> ServiceDef:
        for service in self.services:
            if service.name == name:
                return service
        known = ", ".join(s.name for s in self.services) or "none"
        raise TopologyError(f"no service named {name!r} in the topology (known: {known})")

    def with_overrides(
        self,
        *,
        port_base: int | None = None,
        replicas: Mapping[str, int] | None = None,
        database: str | None = None,
        env: Mapping[str, Mapping[str, str]] | None = None,
    ) -> Topology:
        """This topology with other ports, replica counts, database, or extra environment
        per service (``env``: service → variables, added to its own)."""
        replicas, env = replicas or {}, env or {}
        services = tuple(
            replace(
                s,
                replicas=replicas.get(s.name, s.replicas),
                env={**s.env, **env.get(s.name, {})},
            )
            for s in self.services
        )
        for name in (*replicas, *env):
            self.service(name)
        result = replace(
            self,
            port_base=self.port_base if port_base is None else port_base,
            services=services,
            database=self.database if database is None else database,
        )
        result.validate()
        return result

    def validate(self) -> None:
        if self.database not in DATABASES:
            raise TopologyError(
                f"database {self.database!r} is not supported: choose {' or '.join(DATABASES)}"
            )
        if not 1024 <= self.port_base <= 65535 - PORT_SPAN:
            raise TopologyError(
                f"port_base {self.port_base} is out of range: choose 1024..{65535 - PORT_SPAN}"
            )
        if len(self.services) > MAX_SERVICES:
            raise TopologyError(f"at most {MAX_SERVICES} services fit in one port span")
        names = {s.name for s in self.services}
        if sum(s.issues_tokens for s in self.services) > 1:
            raise TopologyError("at most one service may have issues_tokens = true")
        if len(names) != len(self.services):
            raise TopologyError("service names must be unique")
        for s in self.services:
            if not _NAME.match(s.name):
                raise TopologyError(f"service name {s.name!r}: use lowercase letters, digits, _")
            if not 1 <= s.replicas <= MAX_REPLICAS:
                raise TopologyError(
                    f"services.{s.name}.replicas = {s.replicas}: choose 1..{MAX_REPLICAS}"
                )
            for callee in s.calls:
                if callee not in names:
                    raise TopologyError(f"services.{s.name}.calls names unknown {callee!r}")
        self.gateway.validate()
        for t in self.topics:
            if not _TOPIC.match(t.name) or t.partitions < 1:
                raise TopologyError(f"topic {t.name!r} ({t.partitions} partitions) is not valid")


def parse_topology(data: Mapping[str, Any]) -> Topology:
    """Build a :class:`Topology` from its TOML form (see ``system/topology.toml``)."""
    try:
        services = tuple(
            ServiceDef(
                name=name,
                index=index,
                replicas=int(spec.get("replicas", 1)),
                command=tuple(spec.get("command", ())),
                health_path=str(spec.get("health_path", "/health/ready")),
                calls=tuple(spec.get("calls", ())),
                env=dict(spec.get("env", {})),
                public_paths=tuple(spec.get("public_paths", ())),
                issues_tokens=bool(spec.get("issues_tokens", False)),
            )
            for index, (name, spec) in enumerate(data.get("services", {}).items())
        )
        topics = tuple(
            _topic(name, spec) for name, spec in data.get("kafka", {}).get("topics", {}).items()
        )
        gateway = GatewayPolicy(**data.get("gateway", {}))
        topology = Topology(
            port_base=int(data.get("port_base", 20000)),
            services=services,
            topics=topics,
            gateway=gateway,
        )
    except (TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, TopologyError):
            raise
        raise TopologyError(f"topology is malformed: {exc}") from exc
    topology.validate()
    return topology


def load_topology(path: Path = DEFAULT_TOPOLOGY_FILE) -> Topology:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise TopologyError(f"topology file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(f"topology file {path} is not valid TOML: {exc}") from exc
    return parse_topology(data)
