"""The whole system in the test process: one Litestar app per service, built the way the
runtime builds them, each on its own SQLite file under one folder, with the stack's key
code (``system.chassis.keys``) and the in-process mesh for the calls of the topology.

Nothing is started here: whoever serves the apps enters their lifespans (schemathesis'
ASGI client does it for the apps it calls; :func:`running` does it for async tests).
Without Kafka settings every event stays in its service's outbox, where the event
contract tests read it. Used by the in-process contract suite, the saga's unit tests and
``benchmarks.order_cpu``.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from litestar import Litestar
from sqlalchemy import select

from system.chassis.inbox import EventConsumer, Outcome
from system.chassis.inprocess import InProcessMesh, mesh_urls
from system.chassis.keys import KeyFiles
from system.chassis.outbox import OutboxMessage
from system.chassis.settings import ServiceSettings
from system.events.schemas import Event, encode
from system.runtime.topology import Topology, load_topology

ADMIN_EMAIL = "admin@microharness.test"
ADMIN_PASSWORD = "contract-admin-password"  # noqa: S105 - a throw-away in-process account


@dataclass(frozen=True)
class InProcessSystem:
    """Every service's app, by name, and where their data lives."""

    folder: Path
    keys: KeyFiles
    apps: Mapping[str, Litestar]
    meshes: Mapping[str, InProcessMesh]
    """Caller → the in-process mesh its calls go through."""

    def database(self, service: str) -> Path:
        """The service's SQLite file (read it with ``sqlite3``: WAL lets a reader in)."""
        return self.folder / service / f"{service}.db"


def _settings_class(service: str) -> type[ServiceSettings]:
    module = importlib.import_module(f"system.services.{service}.settings")
    cls: type[ServiceSettings] = getattr(module, f"{service.title()}Settings")
    return cls


def _build(service: str) -> Any:
    return importlib.import_module(f"system.services.{service}.app").build


def build_system(
    folder: Path,
    topology: Topology | None = None,
    *,
    only: Collection[str] | None = None,
    keys: KeyFiles | None = None,
    common: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> InProcessSystem:
    """Build (not start) every service of ``topology`` (or ``only`` these, which must
    include what they call) in ``folder``; ``keys`` default to new ones there; ``common``
    settings go to every service, ``overrides`` to one (service → settings)."""
    topology = topology or load_topology()
    keys = keys or KeyFiles(folder / "jwt").ensure()
    services = [s for s in topology.services if only is None or s.name in only]
    callers = [s for s in services if s.calls]
    secrets = {s.name: f"{s.name}-contract-client-secret" for s in callers}
    clients = folder / "clients.json"
    clients.write_text(json.dumps(secrets))
    apps: dict[str, Litestar] = {}
    meshes: dict[str, InProcessMesh] = {}
    for service in sorted(services, key=lambda s: bool(s.calls)):  # callees first
        extra: dict[str, Any] = {}
        if service.issues_tokens:
            extra.update(
                service_clients_file=clients,
                jwt_private_key_file=keys.private,
                admin_email=ADMIN_EMAIL,
                admin_password=ADMIN_PASSWORD,
            )
        if service.calls:
            extra.update(client_secret=secrets[service.name], mesh=mesh_urls(*service.calls))
        values: dict[str, Any] = {
            "name": service.name,
            "data_dir": folder / service.name,
            "log_json": False,
            "jwt_public_key_file": keys.public,
            **extra,
            **(common or {}),
            **(overrides or {}).get(service.name, {}),
        }
        settings = _settings_class(service.name)(**values)
        kwargs: dict[str, Any] = {}
        if service.calls:
            meshes[service.name] = InProcessMesh({c: apps[c] for c in service.calls})
            kwargs["mesh_transport"] = meshes[service.name]
        apps[service.name] = _build(service.name)(settings, **kwargs)
    return InProcessSystem(folder, keys, apps, meshes)


@asynccontextmanager
async def running(system: InProcessSystem) -> AsyncIterator[InProcessSystem]:
    """Every app's lifespan, entered and left in this one task (callees first)."""
    async with AsyncExitStack() as stack:
        for app in system.apps.values():
            await stack.enter_async_context(app.lifespan())
        yield system


@dataclass(frozen=True)
class Record:
    """A message as the inbox consumer reads it from Kafka (``ConsumerRecordLike``)."""

    value: bytes
    topic: str
    key: bytes = b"k"
    partition: int = 0
    offset: int = 0
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def record_of(event: Event[Any]) -> Record:
    return Record(value=encode(event), topic=event.topic, key=event.key.encode())


def inbox_consumer(service: str, session_maker: Any) -> EventConsumer:
    """``service``'s event handlers behind an inbox on ``session_maker``, fed by hand
    (``await consumer.process(record)``) instead of from Kafka."""
    handlers = importlib.import_module(f"system.services.{service}.consumers").HANDLERS
    return EventConsumer(session_maker, "in-process:0", service, [], handlers, registry=None)


async def deliver(system: InProcessSystem, source: str, topic: str, to: str) -> int:
    """Hand what ``source`` staged for ``topic`` to ``to``'s event handlers, through its
    inbox, as Kafka would (there is none in-process): e.g. the catalog's prices to
    orders. Returns how many events ``to`` processed (a repeat is a duplicate)."""
    consumer = inbox_consumer(to, system.apps[to].state.events.session_maker)
    async with system.apps[source].state.events.session_maker() as session:
        rows = await session.scalars(
            select(OutboxMessage).where(OutboxMessage.topic == topic).order_by(OutboxMessage.id)
        )
        staged = [Record(row.payload, row.topic, row.key.encode()) for row in rows]
    outcomes = [await consumer.process(record) for record in staged]
    return outcomes.count(Outcome.PROCESSED)
