"""``create_app``: one Litestar app per service, assembled the same way for all of them.

A service hands over its typed settings and a :class:`ServiceParts` (its routes, public
paths and event handlers); the chassis adds the database, tracing, metrics, problem
details, JWT checks, health checks, the mesh client and the Kafka outbox relay and inbox
consumer, and tears them down in order on shutdown (in-flight requests finish first:
the server drains before the lifespan ends; then the outbox is flushed and spans are
exported).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
from advanced_alchemy.base import orm_registry
from advanced_alchemy.extensions.litestar import (
    AsyncSessionConfig,
    SQLAlchemyAsyncConfig,
    SQLAlchemyPlugin,
)
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.openapi import OpenAPIConfig
from litestar.plugins.prometheus import PrometheusController
from litestar.types import ControllerRouterHandler
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from system.chassis.auth import jwt_auth
from system.chassis.db import (
    InPlaceSession,
    Transactions,
    create_checkpointer,
    create_engine,
    create_reader,
)
from system.chassis.events import EventHandler, EventRuntime, with_defects
from system.chassis.health import HealthController, database_check
from system.chassis.openapi import Link, StrictStructSchemaPlugin, document
from system.chassis.outbound import MeshClient
from system.chassis.problems import problem_details_plugin, unexpected_error
from system.chassis.request_metrics import request_metrics
from system.chassis.server_spans import OpenTelemetryPlugin
from system.chassis.settings import ServiceSettings
from system.chassis.sql_spans import trace_statements
from system.chassis.telemetry import configure_logging, tracer_provider

Hook = Callable[[Litestar], Awaitable[None]]


@dataclass(frozen=True)
class ServiceParts:
    """What a service adds to the chassis."""

    route_handlers: Sequence[ControllerRouterHandler]
    public_paths: Sequence[str] = ()
    """Path prefixes reachable without a token (e.g. register, login, JWKS)."""
    event_handlers: Mapping[str, EventHandler] = field(default_factory=dict)
    """Event type → handler, run exactly once per event through the inbox."""
    dependencies: Mapping[str, Provide] = field(default_factory=dict)
    on_startup: Sequence[Hook] = ()
    on_shutdown: Sequence[Hook] = ()
    """Run first on shutdown, before the event plumbing stops (e.g. stop background work)."""
    links: Sequence[Link] = ()
    """OpenAPI links between the service's operations (see ``system.chassis.openapi``)."""
    version: str = "1.0.0"
    description: str = ""


class MetricsController(PrometheusController):
    path = "/metrics"
    include_in_schema = False


def create_app(
    settings: ServiceSettings,
    parts: ServiceParts,
    *,
    mesh_transport: httpx.AsyncBaseTransport | None = None,
) -> Litestar:
    """``mesh_transport`` replaces the network under the mesh client (tests route the
    upstream names to in-process apps with it)."""
    configure_logging(settings)
    engine = create_engine(settings)
    reader = create_reader(settings, engine)
    read_maker = async_sessionmaker(
        reader, expire_on_commit=False, sync_session_class=InPlaceSession
    )

    async def db_read() -> AsyncIterator[AsyncSession]:
        async with read_maker() as session:
            yield session

    provider = tracer_provider(settings)
    session_maker = async_sessionmaker(
        engine, expire_on_commit=False, sync_session_class=InPlaceSession
    )
    alchemy = SQLAlchemyAsyncConfig(
        engine_instance=engine,
        session_maker=session_maker,
        before_send_handler="autocommit",
        session_config=AsyncSessionConfig(
            expire_on_commit=False, sync_session_class=InPlaceSession
        ),
        session_dependency_key="transaction",
    )

    async def db_session(
        transaction: NamedDependency[AsyncSession],
    ) -> AsyncIterator[AsyncSession]:
        """The request's transaction, flushed when the handler returns, before the response
        exists: a constraint that fails then is the request's error (advanced-alchemy's
        autocommit only logs a failed commit at DEBUG level and the 2xx still goes out)."""
        yield transaction
        await transaction.flush()

    handlers = with_defects(parts.event_handlers, settings.defects)
    events = EventRuntime(
        settings, session_maker, handlers, reader=read_maker, tracer_provider=provider
    )

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with engine.begin() as conn:
            await conn.run_sync(orm_registry.metadata.create_all)
        mesh = MeshClient(
            settings.mesh,
            timeout=settings.mesh_timeout_s,
            retries=settings.mesh_retries,
            breaker_threshold=settings.mesh_breaker_threshold,
            breaker_reset_s=settings.mesh_breaker_reset_s,
            tracer_provider=provider,
            transport=mesh_transport,
        )
        app.state.mesh = mesh
        app.state.tracer_provider = provider
        for hook in parts.on_startup:
            await hook(app)
        await events.start()
        # listened to while the app runs (an app may be started again, as tests do)
        statement_spans = trace_statements([engine.sync_engine, reader.sync_engine], provider)
        checkpointer = create_checkpointer(settings)
        if checkpointer is not None:
            checkpointer.start()
        try:
            yield
        finally:
            for hook in parts.on_shutdown:
                await hook(app)
            await events.stop()
            await mesh.aclose()
            provider.shutdown()
            for spans in statement_spans:
                spans.remove()
            await engine.dispose()
            if reader is not engine:
                await reader.dispose()
            if checkpointer is not None:
                await checkpointer.stop()

    auth = jwt_auth(settings, parts.public_paths) if settings.jwt_public_key_file else None
    observability = ["/health", "/metrics", "/schema"]
    app = Litestar(
        route_handlers=[*parts.route_handlers, HealthController, MetricsController],
        dependencies={
            "settings": Provide(lambda: settings, sync_to_thread=False),
            "mesh": Provide(_mesh, sync_to_thread=False),
            "db_read": Provide(db_read),
            "db_session": Provide(db_session),
            **parts.dependencies,
        },
        plugins=[
            SQLAlchemyPlugin(alchemy),
            StrictStructSchemaPlugin(),
            problem_details_plugin(),
            OpenTelemetryPlugin(provider, exclude=observability),  # one server span a request
        ],
        middleware=[request_metrics(settings.name, exclude=observability)],
        on_app_init=[auth.on_app_init] if auth else [],
        exception_handlers={Exception: unexpected_error},
        lifespan=[lifespan],
        state=State(
            {
                "settings": settings,
                "events": events,
                "db_reader": reader,
                "transactions": Transactions(session_maker, read_maker),
                "ready_checks": {"database": database_check(engine), **events.ready_checks()},
            }
        ),
        openapi_config=OpenAPIConfig(
            title=settings.name,
            version=parts.version,
            description=parts.description,
            path="/schema",
        ),
    )
    document(app.openapi_schema, public_paths=parts.public_paths, links=parts.links)
    return app


def _mesh(state: State) -> MeshClient:
    mesh: MeshClient = state.mesh
    return mesh


__all__ = ["Link", "ServiceParts", "create_app"]
