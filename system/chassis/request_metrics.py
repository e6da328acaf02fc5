"""Prometheus request metrics for every service, for a fraction of the plugin's cost.

The same series as Litestar's ``PrometheusMiddleware`` with ``prefix="http"`` and
``group_path=True`` — ``http_requests_total``, ``http_requests_error_total``,
``http_request_duration_seconds`` and ``http_requests_in_progress``, labelled ``method``,
``path`` (the route's template), ``status_code`` and ``app_name`` — so dashboards,
``harness.metrics`` and the Prometheus queries of the tests read them unchanged, and
``/metrics`` is still Litestar's ``PrometheusController``.

Why not the plugin's middleware: per request it builds a ``Request``, two label dicts and
four ``labels()`` lookups (each hashes its label values under a lock), about a sixth of a
cached catalog read's CPU measured live (py-spy, ``benchmarks.catalog_read``). Litestar
builds a route's middleware stack once, so an instance here serves one route: it keeps
the labelled children per (method, status) and a request costs two dict lookups, an
``inc`` and an ``observe``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import Counter, Gauge, Histogram

LABELS = ("method", "path", "status_code", "app_name")
_metrics: dict[str, Any] = {}


def _families() -> tuple[Gauge, Counter, Counter, Histogram]:
    """The four families, made once per process (every app in a process shares them,
    told apart by ``app_name``, as with the plugin)."""
    if not _metrics:
        _metrics["progress"] = Gauge(
            "http_requests_in_progress",
            "Total requests currently in progress",
            LABELS,
            multiprocess_mode="livesum",
        )
        _metrics["count"] = Counter("http_requests_total", "Total requests", LABELS)
        _metrics["errors"] = Counter(
            "http_requests_error_total", "Total errors in requests", LABELS
        )
        _metrics["duration"] = Histogram(
            "http_request_duration_seconds", "Request duration, in seconds", LABELS
        )
    return _metrics["progress"], _metrics["count"], _metrics["errors"], _metrics["duration"]


class _Series:
    """The labelled children of one (method, path, status_code, app_name)."""

    __slots__ = ("count", "duration", "errors")

    def __init__(self, labels: tuple[str, ...]) -> None:
        _, count, errors, duration = _families()
        self.count = count.labels(*labels)
        self.duration = duration.labels(*labels)
        self.errors = errors.labels(*labels) if int(labels[2]) >= 500 else None


class RequestMetrics:
    """ASGI middleware counting and timing every HTTP request not under ``exclude``."""

    def __init__(self, app: ASGIApp, app_name: str, exclude: Sequence[str]) -> None:
        self.app = app
        self.app_name = app_name
        self.exclude = tuple(exclude)
        self._series: dict[tuple[str, str, int], _Series] = {}
        self._progress: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["path"].startswith(self.exclude):
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        path: str = scope.get("path_template") or scope["path"]
        progress = self._progress.get((method, path))
        if progress is None:
            progress = _families()[0].labels(method, path, "200", self.app_name)
            self._progress[(method, path)] = progress
        began = time.perf_counter()
        outcome = [200, 0.0]  # status, duration up to the last body message

        async def measured_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                outcome[0] = message["status"]
            elif message["type"] == "http.response.body":
                outcome[1] = time.perf_counter() - began
            await send(message)

        progress.inc()
        try:
            await self.app(scope, receive, measured_send)
        finally:
            progress.dec()
            status = int(outcome[0])
            series = self._series.get((method, path, status))
            if series is None:
                series = _Series((method, path, str(status), self.app_name))
                self._series[(method, path, status)] = series
            series.count.inc()
            series.duration.observe(outcome[1])
            if series.errors is not None:
                series.errors.inc()


def request_metrics(app_name: str, exclude: Sequence[str]) -> Any:
    """The middleware factory for ``Litestar(middleware=[...])``."""

    def wrap(app: ASGIApp) -> ASGIApp:
        return RequestMetrics(app, app_name, exclude)

    return wrap
