"""The orders service, assembled on the chassis."""

from __future__ import annotations

import httpx
from litestar import Litestar

from system.chassis.app import ServiceParts, create_app
from system.chassis.credentials import ServiceToken
from system.chassis.settings import load_settings
from system.services.orders.api import LINKS, OrdersController
from system.services.orders.consumers import HANDLERS
from system.services.orders.saga import SagaDriver
from system.services.orders.settings import OrdersSettings


def build(
    settings: OrdersSettings, *, mesh_transport: httpx.AsyncBaseTransport | None = None
) -> Litestar:
    async def start_saga(app: Litestar) -> None:
        token = ServiceToken(app.state.mesh, settings.name, settings.client_secret or "")
        app.state.service_token = token
        app.state.saga = SagaDriver(
            settings,
            app.state.transactions,
            app.state.mesh,
            token,
            tracer_provider=app.state.tracer_provider,
        )
        await app.state.saga.start()

    async def stop_saga(app: Litestar) -> None:
        await app.state.saga.stop()

    return create_app(
        settings,
        ServiceParts(
            route_handlers=[OrdersController],
            event_handlers=HANDLERS,
            on_startup=[start_saga],
            on_shutdown=[stop_saga],
            links=LINKS,
            description="Orders: event-sourced, driven by a saga.",
        ),
        mesh_transport=mesh_transport,
    )


def create() -> Litestar:
    """Granian's factory: settings from the ``ORDERS_*`` environment."""
    return build(load_settings(OrdersSettings))
