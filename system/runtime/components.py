"""The process list of a stack: how each real component and service replica is started,
probed and prepared, and the config files they read, all derived from the topology."""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import yaml

from system.chassis.keys import KeyFiles
from system.runtime import tools
from system.runtime.config.envoy import JWT_AUDIENCE, JWT_ISSUER, envoy_config
from system.runtime.config.jaeger import jaeger_config
from system.runtime.config.kafka import kafka_properties, render_properties
from system.runtime.config.prometheus import prometheus_config
from system.runtime.config.toxiproxy import toxiproxy_config
from system.runtime.kafka_admin import cluster_id, create_topics, kafka_probe
from system.runtime.paths import StackPaths
from system.runtime.postgres import (
    create_databases,
    initdb,
    postgres_probe,
    server_user,
    socket_dir_arg,
)
from system.runtime.process import Hook, ProcessSpec, http_probe
from system.runtime.state import StackSettings
from system.runtime.topology import Topology

INFRASTRUCTURE = ("toxiproxy", "kafka", "jaeger", "prometheus", "envoy")
KAFKA_JVM_FLAGS = (
    # measured: ~175 MiB resident after produce/consume, ready in ~2 s (345 MiB, ~4 s with
    # the JVM's defaults); C1 only (TieredStopAtLevel=1) starts fastest on two cores
    "-Xms32m",
    "-Xmx192m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:ReservedCodeCacheSize=32m",
    "-XX:MaxMetaspaceSize=96m",
    "-XX:MaxDirectMemorySize=64m",
    "-Xss512k",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)


REQUIRED_TOOLS: dict[str, tuple[Callable[[], object], ...]] = {
    "toxiproxy": (tools.toxiproxy_binary,),
    "kafka": (tools.java_binary, tools.kafka_classpath),
    "jaeger": (tools.jaeger_binary,),
    "prometheus": (tools.prometheus_binary,),
    "envoy": (tools.envoy_binary,),
    "postgres": (tools.initdb_binary, tools.postgres_binary),
}
POSTGRES_FLAGS = (
    # a throw-away local stack: durability traded for speed (a crash may lose the
    # cluster; `harness down` shuts it down cleanly); 200 connections fit every
    # replica's pool (database_pool_size = 20 by default, no overflow)
    "-c",
    "max_connections=200",
    "-c",
    "shared_buffers=32MB",
    "-c",
    "fsync=off",
    "-c",
    "synchronous_commit=off",
    "-c",
    "full_page_writes=off",
    # a stack's tables start empty and grow fast: autovacuum's default look once a
    # minute left the planner a first minute of empty-table statistics, in which the
    # inbox lookup (consumer = $1 AND event_id IN (...)) read every row of its consumer
    # through the key's first column and filtered the ids (~2,900 rows a lookup in
    # analytics by the end of a 35 s run at 40 orders/s)
    "-c",
    "autovacuum_naptime=5s",
)


def preflight(without: tuple[str, ...] = (), database: str = "sqlite") -> None:
    """Raise :class:`~system.runtime.tools.ToolMissing` for the first program not installed
    (PostgreSQL's only when the stack uses it)."""
    for name, lookups in REQUIRED_TOOLS.items():
        if name in without or (name == "postgres" and database != "postgres"):
            continue
        for lookup in lookups:
            lookup()


def write_configs(topology: Topology, paths: StackPaths, settings: StackSettings) -> None:
    """Generate every component's config file under the stack's ``config/`` folder."""
    cfg = paths.config
    cfg.mkdir(parents=True, exist_ok=True)
    if topology.token_issuer is not None:
        jwt_keys(paths).ensure()
    (cfg / "envoy.yaml").write_text(
        yaml.safe_dump(envoy_config(topology, jwks_file=jwt_keys(paths).jwks), sort_keys=False)
    )
    (cfg / "jaeger.yaml").write_text(yaml.safe_dump(jaeger_config(topology), sort_keys=False))
    (cfg / "prometheus.yaml").write_text(
        yaml.safe_dump(prometheus_config(topology), sort_keys=False)
    )
    (cfg / "toxiproxy.json").write_text(json.dumps(toxiproxy_config(topology), indent=2))
    (cfg / "kafka.properties").write_text(
        render_properties(kafka_properties(topology, paths.data / "kafka" / "logs"))
    )


def _kafka_format(paths: StackPaths) -> Hook:
    """Format KRaft storage on first start (never again: that would lose the log)."""
    data = paths.data / "kafka"

    async def prepare() -> None:
        if (data / "logs" / "meta.properties").exists():
            return
        proc = await asyncio.create_subprocess_exec(
            str(tools.java_binary()),
            "-Xmx128m",
            "-XX:+UseSerialGC",
            f"-Dlog4j2.configurationFile={tools.KAFKA_LOG4J}",
            "-cp",
            tools.kafka_classpath(),
            "kafka.tools.StorageTool",
            "format",
            "--config",
            str(paths.config / "kafka.properties"),
            "--cluster-id",
            cluster_id(data),
            "--standalone",
            "--ignore-formatted",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"kafka storage format failed: {output.decode()[-500:]}")

    return prepare


def infrastructure_specs(
    topology: Topology, paths: StackPaths, without: tuple[str, ...] = ()
) -> list[ProcessSpec]:
    ports, cfg = topology.ports, paths.config
    kafka_bootstrap = f"127.0.0.1:{ports.kafka}"
    specs: dict[str, Callable[[], ProcessSpec]] = {
        "toxiproxy": lambda: ProcessSpec(
            "toxiproxy",
            (
                str(tools.toxiproxy_binary()),
                "-host",
                "127.0.0.1",
                "-port",
                str(ports.toxiproxy),
                "-config",
                str(cfg / "toxiproxy.json"),
                "-proxy-metrics",
                "-runtime-metrics",
            ),
            ports={
                "api": ports.toxiproxy,
                **{f"proxy.{p.name}": p.listen for p in topology.proxies},
            },
            probe=http_probe(f"http://127.0.0.1:{ports.toxiproxy}/version"),
            stop_grace=5,
        ),
        "kafka": lambda: ProcessSpec(
            "kafka",
            (
                str(tools.java_binary()),
                *KAFKA_JVM_FLAGS,
                f"-Dlog4j2.configurationFile={tools.KAFKA_LOG4J}",
                "-cp",
                tools.kafka_classpath(),
                "kafka.Kafka",
                str(cfg / "kafka.properties"),
            ),
            ports={
                "bootstrap": ports.kafka,
                "broker": ports.kafka_external,
                "controller": ports.kafka_controller,
            },
            after=("toxiproxy",) if "toxiproxy" not in without else (),
            probe=kafka_probe(
                kafka_bootstrap
                if "toxiproxy" not in without
                else f"127.0.0.1:{ports.kafka_internal}"
            ),
            prepare=_kafka_format(paths),
            on_ready=create_topics(kafka_bootstrap, topology.topics),
            stop_grace=30,
        ),
        "jaeger": lambda: ProcessSpec(
            "jaeger",
            (str(tools.jaeger_binary()), "--config", str(cfg / "jaeger.yaml")),
            env={"GOMAXPROCS": "2", "GOMEMLIMIT": "200MiB"},
            ports={"query": ports.jaeger_query, "otlp_http": ports.jaeger_otlp_http},
            probe=http_probe(f"http://127.0.0.1:{ports.jaeger_health}/status"),
            stop_grace=10,
        ),
        "prometheus": lambda: ProcessSpec(
            "prometheus",
            (
                str(tools.prometheus_binary()),
                f"--config.file={cfg / 'prometheus.yaml'}",
                f"--storage.tsdb.path={paths.data / 'prometheus'}",
                "--storage.tsdb.retention.time=6h",
                f"--web.listen-address=127.0.0.1:{ports.prometheus}",
                "--web.enable-lifecycle",
                "--log.format=json",
            ),
            env={"GOMAXPROCS": "2"},
            ports={"http": ports.prometheus},
            probe=http_probe(f"http://127.0.0.1:{ports.prometheus}/-/ready"),
            stop_grace=15,
        ),
        "envoy": lambda: ProcessSpec(
            "envoy",
            (
                str(tools.envoy_binary()),
                "-c",
                str(cfg / "envoy.yaml"),
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "--log-level",
                "warn",
                "--drain-time-s",
                "1",
                "--parent-shutdown-time-s",
                "2",
            ),
            ports={
                "gateway": ports.gateway,
                "admin": ports.envoy_admin,
                **{f"mesh.{s.name}": ports.mesh(s) for s in topology.services},
            },
            probe=http_probe(f"http://127.0.0.1:{ports.envoy_admin}/ready"),
            stop_grace=5,
        ),
    }
    if topology.uses_postgres:
        specs["postgres"] = lambda: postgres_spec(topology, paths, without)
    return [build() for name, build in specs.items() if name not in without]


def postgres_spec(topology: Topology, paths: StackPaths, without: tuple[str, ...]) -> ProcessSpec:
    """The stack's PostgreSQL server: its cluster lives in ``data/postgres`` with the rest
    of the stack's data, its socket in ``run/``; clients dial Toxiproxy. It stops on the
    supervisor's SIGTERM (smart shutdown), after the services, which all wait for it."""
    ports = topology.ports
    data, sockets = paths.data / "postgres", paths.root / "run"
    proxied = "toxiproxy" not in without
    client_port = ports.postgres if proxied else ports.postgres_server
    return ProcessSpec(
        "postgres",
        (
            str(tools.postgres_binary()),
            "-D",
            str(data),
            "-p",
            str(ports.postgres_server),
            "-c",
            "listen_addresses=127.0.0.1",
            "-k",
            socket_dir_arg(sockets),
            *POSTGRES_FLAGS,
        ),
        ports={"client": ports.postgres, "server": ports.postgres_server},
        after=("toxiproxy",) if proxied else (),
        probe=postgres_probe(client_port),
        prepare=initdb(data, sockets),
        on_ready=create_databases(client_port, [s.name for s in topology.services]),
        stop_grace=30,
        user=server_user(),
    )


def jwt_keys(paths: StackPaths) -> KeyFiles:
    """The stack's token key pair and JWKS, made on first start (never committed)."""
    return KeyFiles(paths.data / "jwt")


def client_secrets(topology: Topology, paths: StackPaths) -> dict[str, str]:
    """Client-credentials secrets of the services that call others, made once per stack
    next to the JWT keys (``data/jwt/clients.json``, mode 0600, never committed)."""
    path = jwt_keys(paths).folder / "clients.json"
    secrets_by_client: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    callers = [s.name for s in topology.services if s.calls]
    if any(name not in secrets_by_client for name in callers):
        for name in callers:
            secrets_by_client.setdefault(name, secrets.token_urlsafe(32))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(json.dumps(secrets_by_client, indent=2))
    return secrets_by_client


def service_env(topology: Topology, paths: StackPaths, name: str, replica: int) -> dict[str, str]:
    """What a replica is told about the stack, under its own prefix (``PRODUCTS_PORT``...),
    read by its typed settings (:class:`system.chassis.settings.ServiceSettings`)."""
    ports = topology.ports
    service = topology.service(name)
    keys = jwt_keys(paths)
    values = {
        "REPLICA": f"{name}-{replica}",
        "PORT": str(ports.replica(service, replica)),
        "DATA_DIR": str(paths.data / name),
        "KAFKA_BOOTSTRAP": f"127.0.0.1:{ports.kafka}",
        "OTLP_ENDPOINT": f"http://127.0.0.1:{ports.jaeger_otlp_http}",
        "MESH": json.dumps(
            {c: f"http://127.0.0.1:{ports.mesh(topology.service(c))}" for c in service.calls}
        ),
    }
    if service.replicas > 1:  # the replicas share the service's database, and its outbox
        values["OUTBOX_SHARED"] = "true"
    if topology.uses_postgres:
        values["DATABASE_URL"] = (
            f"postgresql+asyncpg://postgres@127.0.0.1:{ports.postgres}/{service.name}"
        )
    if topology.token_issuer is not None:
        values["JWT_PUBLIC_KEY_FILE"] = str(keys.public)
        values["JWT_ISSUER"] = JWT_ISSUER
        values["JWT_AUDIENCE"] = JWT_AUDIENCE
    if service.issues_tokens:
        values["JWT_PRIVATE_KEY_FILE"] = str(keys.private)
        client_secrets(topology, paths)
        values["SERVICE_CLIENTS_FILE"] = str(keys.folder / "clients.json")
    if service.calls and topology.token_issuer is not None:
        values["CLIENT_SECRET"] = client_secrets(topology, paths)[name]
    prefix = f"{name.upper()}_"
    env = {f"{prefix}{key}": value for key, value in values.items()}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(service.env)
    return env


def service_specs(
    topology: Topology, paths: StackPaths, after: tuple[str, ...]
) -> list[ProcessSpec]:
    specs = []
    for service in topology.services:
        (paths.data / service.name).mkdir(parents=True, exist_ok=True)
        for replica in range(1, service.replicas + 1):
            port = topology.ports.replica(service, replica)
            specs.append(
                ProcessSpec(
                    f"{service.name}-{replica}",
                    tuple(service.argv(python=sys.executable, port=port, replica=replica)),
                    role="service",
                    env=service_env(topology, paths, service.name, replica),
                    cwd=Path(tools.RUNTIME_DIR).parents[1],
                    ports={"http": port},
                    after=after,
                    probe=http_probe(f"http://127.0.0.1:{port}{service.health_path}"),
                    stop_grace=15,
                )
            )
    return specs


def build_specs(
    topology: Topology, paths: StackPaths, settings: StackSettings
) -> list[ProcessSpec]:
    """Infrastructure first, then the services; Envoy last, once every replica is ready,
    so that its first active health checks already find them (like an ingress that routes
    only to ready pods)."""
    infra = infrastructure_specs(topology, paths, settings.without)
    needed = tuple(s.name for s in infra if s.name in ("kafka", "jaeger", "postgres"))
    services = service_specs(topology, paths, needed)
    replicas = tuple(s.name for s in services)
    ordered = [replace(s, after=(*s.after, *replicas)) if s.name == "envoy" else s for s in infra]
    return ordered + services
