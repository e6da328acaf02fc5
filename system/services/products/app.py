"""The products service, assembled on the chassis."""

from __future__ import annotations

from litestar import Litestar

from system.chassis.app import ServiceParts, create_app
from system.chassis.settings import load_settings
from system.services.products.api import LINKS, CatalogController, ReservationController
from system.services.products.consumers import HANDLERS
from system.services.products.settings import ProductsSettings
from system.services.products.views import ProductReads


def build(settings: ProductsSettings) -> Litestar:
    async def open_reads(app: Litestar) -> None:
        app.state.product_reads = ProductReads(settings.database, app.state.db_reader)

    async def close_reads(app: Litestar) -> None:
        app.state.product_reads.close()

    return create_app(
        settings,
        ServiceParts(
            route_handlers=[CatalogController, ReservationController],
            event_handlers=HANDLERS,
            on_startup=[open_reads],
            on_shutdown=[close_reads],
            links=LINKS,
            description="The catalog and its stock.",
        ),
    )


def create() -> Litestar:
    """Granian's factory: settings from the ``PRODUCTS_*`` environment."""
    return build(load_settings(ProductsSettings))
