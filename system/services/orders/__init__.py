"""orders: the event-sourced order aggregate, its read model, and the saga that drives
an order through products (reserve) and payments (authorize) to confirmed or cancelled."""
