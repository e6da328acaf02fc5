"""products: the catalog, and stock kept as available / reserved / sold per product,
with reservations idempotent by order id (reserve, release, commit)."""
