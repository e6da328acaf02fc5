"""The PromQL behind the SLO helpers, one registered :class:`Source` per point of view.

* ``service`` — what the service itself served: Litestar's Prometheus middleware,
  ``http_requests_total`` and ``http_request_duration_seconds`` (labels ``service``,
  ``replica``, ``method``, ``path``, ``status_code``). A counter series is born at its first
  request, so the first 5xx of a new label set is not counted by ``increase()``.
* ``mesh`` — what callers saw through the service's mesh listener in Envoy
  (``envoy_http_downstream_rq_xx`` and ``envoy_http_downstream_rq_time`` in ms, label
  ``envoy_http_conn_manager_prefix="mesh_<service>"``): it counts injected aborts and
  delays that never reach the service. All response classes exist from the start.

The chassis's breaker gauge is ``mesh_circuit_breaker_state{service, replica, upstream}``,
0 closed, 1 half-open, 2 open.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


def escape(value: str) -> str:
    """``value`` escaped for the inside of a PromQL string literal."""
    return json.dumps(value)[1:-1]


@dataclass(frozen=True)
class Source:
    """Selectors of one point of view; ``{service}`` is replaced by the escaped name."""

    requests: str
    """A counter selector of every request, with a status class/code label."""
    errors: str
    """The same counter, 5xx only."""
    latency_buckets: str
    """A histogram's ``_bucket`` selector."""
    latency_unit_s: float = 1.0
    """Seconds per unit of the histogram (Envoy's is in ms)."""

    def _fill(self, template: str, service: str) -> str:
        return template.replace("{service}", escape(service))

    def error_ratio(self, service: str, range_: str) -> str:
        """5xx over all requests, both as ``increase`` over ``range_`` (no 5xx → 0, no request
        → empty or NaN)."""
        errors = f"sum(increase({self._fill(self.errors, service)}[{range_}]))"
        total = f"sum(increase({self._fill(self.requests, service)}[{range_}]))"
        return f"({errors} or vector(0)) / {total}"

    def latency_quantile(self, service: str, range_: str, q: float) -> str:
        buckets = f"rate({self._fill(self.latency_buckets, service)}[{range_}])"
        query = f"histogram_quantile({q:g}, sum by (le) ({buckets}))"
        return query if self.latency_unit_s == 1.0 else f"{query} * {self.latency_unit_s:g}"


_MESH = 'envoy_http_conn_manager_prefix="mesh_{service}"'

SOURCES: dict[str, Source] = {
    "service": Source(
        requests='http_requests_total{service="{service}"}',
        errors='http_requests_total{service="{service}", status_code=~"5.."}',
        latency_buckets='http_request_duration_seconds_bucket{service="{service}"}',
    ),
    "mesh": Source(
        requests=f"envoy_http_downstream_rq_xx{{{_MESH}}}",
        errors=f'envoy_http_downstream_rq_xx{{{_MESH}, envoy_response_code_class="5"}}',
        latency_buckets=f"envoy_http_downstream_rq_time_bucket{{{_MESH}}}",
        latency_unit_s=0.001,
    ),
}
"""Registered points of view; a new one is one entry here."""


def breaker_state(service: str, upstream: str) -> str:
    """The worst breaker state over ``service``'s replicas for calls to ``upstream``."""
    return (
        f'max(mesh_circuit_breaker_state{{service="{escape(service)}", '
        f'upstream="{escape(upstream)}"}})'
    )
