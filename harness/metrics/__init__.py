"""Metrics from Prometheus: windows, PromQL values, SLO measurements and fault comparisons.

* :mod:`~harness.metrics.window` — :class:`Window`, the time a measurement covers
* :mod:`~harness.metrics.queries` — the PromQL, one registered :class:`Source` per viewpoint
* :mod:`~harness.metrics.client` — :class:`Metrics` (``value``, ``range``, ``error_ratio``,
  ``latency_quantile``, ``breaker_state``)
* :mod:`~harness.metrics.compare` — ``compare(...)`` before/during/after a fault
* :mod:`~harness.metrics.slo` — :class:`SLO`, :class:`SLOResult`
"""

from harness.metrics.client import BREAKER_STATES, BreakerHistory, Metrics, MetricsError, Series
from harness.metrics.compare import Comparison, compare
from harness.metrics.queries import SOURCES, Source
from harness.metrics.slo import SLO, SLOResult
from harness.metrics.window import Window

__all__ = [
    "BREAKER_STATES",
    "SLO",
    "SOURCES",
    "BreakerHistory",
    "Comparison",
    "Metrics",
    "MetricsError",
    "SLOResult",
    "Series",
    "Source",
    "Window",
    "compare",
]
