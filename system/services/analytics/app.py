"""The analytics service, assembled on the chassis."""

from __future__ import annotations

import asyncio

from litestar import Litestar

from system.chassis.app import ServiceParts, create_app
from system.chassis.settings import load_settings
from system.services.analytics.api import AnalyticsController
from system.services.analytics.consumers import HANDLERS
from system.services.analytics.settings import AnalyticsSettings


def build(settings: AnalyticsSettings) -> Litestar:
    app = create_app(
        settings,
        ServiceParts(
            route_handlers=[AnalyticsController],
            event_handlers=HANDLERS,
            description="A projection of the event log, rebuildable from offset 0.",
        ),
    )
    app.state.rebuild_lock = asyncio.Lock()
    return app


def create() -> Litestar:
    """Granian's factory: settings from the ``ANALYTICS_*`` environment."""
    return build(load_settings(AnalyticsSettings))
