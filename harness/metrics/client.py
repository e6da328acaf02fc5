"""PromQL over ``prometheus_api_client``, with the SLO measurements a test asks for.

Every measurement is over a :class:`Window` (``increase``/``rate`` over its length,
evaluated at its end), never one scraped sample. "No data" is ``None``, not 0: a ratio
over zero requests is unknown, and an SLO check says so.

Exceptions::

    MetricsError           Prometheus refused a query, or a query meant as one value
                           returned several series
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException

from harness.metrics.queries import SOURCES, breaker_state
from harness.metrics.window import Window

BREAKER_STATES = {0: "closed", 1: "half-open", 2: "open"}
"""The values of ``mesh_circuit_breaker_state``."""


class MetricsError(RuntimeError):
    """A query failed or did not have the shape asked for (the message names the query)."""


def _number(raw: str) -> float | None:
    value = float(raw)
    return None if math.isnan(value) else value


@dataclass(frozen=True)
class Series:
    """One range-query series: its labels and ``(time, value)`` points (NaN dropped)."""

    labels: dict[str, str]
    points: list[tuple[datetime, float]]

    @property
    def values(self) -> list[float]:
        return [value for _, value in self.points]


@dataclass(frozen=True)
class BreakerHistory:
    """The breaker from ``service`` to ``upstream`` over a window (worst replica)."""

    service: str
    upstream: str
    points: list[tuple[datetime, float]]

    @property
    def worst(self) -> str | None:
        """The worst state seen, or None without samples."""
        return BREAKER_STATES[int(max(self._values))] if self.points else None

    @property
    def last(self) -> str | None:
        return BREAKER_STATES[int(self.points[-1][1])] if self.points else None

    @property
    def opened_at(self) -> datetime | None:
        """The first sample showing it open."""
        return next((t for t, v in self.points if v == 2), None)

    @property
    def _values(self) -> list[float]:
        return [v for _, v in self.points]

    def __str__(self) -> str:
        changes: list[str] = []
        previous = None
        for moment, value in self.points:
            if value != previous:
                changes.append(f"{BREAKER_STATES[int(value)]} at {moment:%H:%M:%S}")
                previous = value
        return f"breaker {self.service}→{self.upstream}: {' → '.join(changes) or 'no samples'}"

    def assert_opened(self) -> BreakerHistory:
        if self.opened_at is None:
            raise AssertionError(f"expected the breaker to open; {self}")
        return self

    def assert_closed_at_end(self) -> BreakerHistory:
        if self.last != "closed":
            raise AssertionError(f"expected the breaker closed at the end; {self}")
        return self


class Metrics:
    """One Prometheus; ``session`` replaces the network (tests pass a replaying
    ``requests.Session``)."""

    def __init__(
        self, url: str, session: requests.Session | None = None, *, timeout: float = 10.0
    ) -> None:
        self.url = url.rstrip("/")
        self._prom = PrometheusConnect(self.url, session=session, timeout=timeout)

    def _query(self, promql: str, at: datetime | None) -> list[dict[str, Any]]:
        params = {"time": f"{at.timestamp():.3f}"} if at is not None else None
        try:
            result: list[dict[str, Any]] = self._prom.custom_query(promql, params=params)
        except PrometheusApiClientException as exc:
            raise MetricsError(f"{promql}: {exc}") from exc
        return result

    def value(self, promql: str, at: datetime | None = None) -> float | None:
        """The single value of an instant query (at ``at``, default now); None when there
        is no series or the value is NaN. Several series are an error: aggregate first."""
        result = self._query(promql, at)
        if not result:
            return None
        if len(result) > 1:
            labels = [series["metric"] for series in result[:5]]
            raise MetricsError(f"{promql}: {len(result)} series, expected one: {labels}")
        return _number(result[0]["value"][1])

    def range(self, promql: str, window: Window, step: str = "2s") -> list[Series]:
        """Every series of a range query over ``window``."""
        try:
            result = self._prom.custom_query_range(promql, window.start, window.end, step)
        except PrometheusApiClientException as exc:
            raise MetricsError(f"{promql}: {exc}") from exc
        return [
            Series(
                dict(series["metric"]),
                [
                    (datetime.fromtimestamp(float(t), tz=UTC), value)
                    for t, raw in series["values"]
                    if (value := _number(raw)) is not None
                ],
            )
            for series in result
        ]

    def error_ratio(self, service: str, window: Window, *, source: str = "service") -> float | None:
        """5xx / all requests of ``service`` over ``window``, seen from ``source``
        (``service`` or ``mesh``, see :mod:`harness.metrics.queries`); None without requests."""
        promql = SOURCES[source].error_ratio(service, window.promql_range)
        return self.value(promql, at=window.end)

    def latency_quantile(
        self, service: str, window: Window, q: float = 0.99, *, source: str = "service"
    ) -> float | None:
        """The ``q`` quantile of ``service``'s request durations over ``window``, in seconds
        (from the histogram buckets; None without requests)."""
        promql = SOURCES[source].latency_quantile(service, window.promql_range, q)
        return self.value(promql, at=window.end)

    def breaker_state(
        self, service: str, upstream: str, window: Window, *, step: str = "1s"
    ) -> BreakerHistory:
        """The breaker from ``service`` to ``upstream`` sampled across ``window``."""
        series = self.range(breaker_state(service, upstream), window, step)
        return BreakerHistory(service, upstream, series[0].points if series else [])
