"""payments: authorize, void, capture, refund (idempotent by order id) against a
simulated provider with deterministic rules, and a ledger that reconciles."""
