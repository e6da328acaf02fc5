"""The payments service, assembled on the chassis."""

from __future__ import annotations

from litestar import Litestar

from system.chassis.app import ServiceParts, create_app
from system.chassis.settings import load_settings
from system.services.payments.api import LINKS, LedgerController, PaymentsController
from system.services.payments.consumers import HANDLERS
from system.services.payments.provider import SimulatedProvider
from system.services.payments.settings import PaymentsSettings


def build(settings: PaymentsSettings) -> Litestar:
    app = create_app(
        settings,
        ServiceParts(
            route_handlers=[PaymentsController, LedgerController],
            event_handlers=HANDLERS,
            links=LINKS,
            description="Card payments and their ledger.",
        ),
    )
    app.state.provider = SimulatedProvider(
        settings.max_amount_cents, settings.provider_latency_ms / 1000
    )
    return app


def create() -> Litestar:
    """Granian's factory: settings from the ``PAYMENTS_*`` environment."""
    return build(load_settings(PaymentsSettings))
