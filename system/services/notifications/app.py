"""The notifications service, assembled on the chassis."""

from __future__ import annotations

from litestar import Litestar

from system.chassis.app import ServiceParts, create_app
from system.chassis.settings import load_settings
from system.services.notifications.api import NotificationsController
from system.services.notifications.consumers import HANDLERS
from system.services.notifications.settings import NotificationsSettings


def build(settings: NotificationsSettings) -> Litestar:
    return create_app(
        settings,
        ServiceParts(
            route_handlers=[NotificationsController],
            event_handlers=HANDLERS,
            description="Notifications of account and order events.",
        ),
    )


def create() -> Litestar:
    """Granian's factory: settings from the ``NOTIFICATIONS_*`` environment."""
    return build(load_settings(NotificationsSettings))
