"""The events orders consumes: the catalog's prices (see :mod:`.catalog`)."""

from __future__ import annotations

from system.services.orders.catalog import on_product_priced, on_product_withdrawn

HANDLERS = {"product.priced": on_product_priced, "product.withdrawn": on_product_withdrawn}
