"""One SERVER span per HTTP request, for a tenth of the OpenTelemetry ASGI middleware's cost.

Litestar's OpenTelemetry plugin wraps the app in ``opentelemetry-instrumentation-asgi``:
~0.11 ms of CPU per request here (semantic-convention switches, header scans, a wrapped
``receive``), more than half of a cached catalog read. :class:`ServerSpans` makes the same
span — name ``"<METHOD> <path>"``, the same ``http.*`` / ``net.*`` attributes, the caller's
trace context from ``traceparent``, ``http.status_code``, ERROR on 5xx or an exception —
and sets it as the current span, so the SQL, mesh and Kafka spans under it are its
children. Attributes are only computed when the span is sampled.

It sits where the plugin's middleware sits (outermost, around the exception handler, so
unknown routes and 500s are traced too): Litestar looks that middleware up by the plugin's
class name, hence :class:`OpenTelemetryPlugin` here keeps the name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from litestar.enums import ScopeType
from litestar.plugins.opentelemetry import OpenTelemetryConfig
from litestar.plugins.opentelemetry import OpenTelemetryPlugin as _LitestarPlugin
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send
from opentelemetry import context, propagate
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode

from system.chassis.trace_context import extract, follows_parent_sampling, unsampled


class ServerSpans:
    """ASGI middleware: a SERVER span around every HTTP request not under ``exclude``."""

    def __init__(self, app: ASGIApp, provider: TracerProvider, exclude: Sequence[str]) -> None:
        self.app = app
        self.tracer = provider.get_tracer("system.chassis.server_spans")
        self.exclude = tuple(exclude)
        self.carried = frozenset(f.encode() for f in propagate.get_global_textmap().fields)
        self.follows_unsampled = follows_parent_sampling(provider)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["path"].startswith(self.exclude):
            await self.app(scope, receive, send)
            return
        http = scope
        carrier = {k.decode(): v.decode("latin-1") for k, v in http["headers"] if k in self.carried}
        parent = extract(carrier) if carrier else None
        if parent is not None and self.follows_unsampled and unsampled(parent):
            # the caller decided not to trace: the sampler would make a non-recording
            # span; carrying the caller's context on costs a fifth of making one
            token = context.attach(parent)
            try:
                await self.app(scope, receive, send)
            finally:
                context.detach(token)
            return
        name = f"{http['method']} {http['path']}"
        with self.tracer.start_as_current_span(name, context=parent, kind=SpanKind.SERVER) as span:
            if span.is_recording():
                headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in http["headers"]}
                span.set_attributes(_attributes(http, headers, name))

            async def traced_send(message: Message) -> None:
                if message["type"] == "http.response.start" and span.is_recording():
                    status = message["status"]
                    span.set_attribute("http.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                await send(message)

            await self.app(scope, receive, traced_send)


def _attributes(scope: HTTPScope, headers: dict[str, str], name: str) -> dict[str, Any]:
    path = scope["path"]
    query = scope.get("query_string", b"").decode("latin-1")
    host = headers.get("host", "")
    attributes: dict[str, Any] = {
        "http.scheme": scope.get("scheme", "http"),
        "http.flavor": scope.get("http_version", "1.1"),
        "http.target": path,
        "http.url": f"{scope.get('scheme', 'http')}://{host}{path}{'?' if query else ''}{query}",
        "http.method": scope["method"],
        "http.server_name": host,
        "http.route": name,
    }
    if server := scope.get("server"):
        attributes["http.host"], attributes["net.host.port"] = server[0], server[1]
    if client := scope.get("client"):
        attributes["net.peer.ip"], attributes["net.peer.port"] = client[0], client[1]
    if agent := headers.get("user-agent"):
        attributes["http.user_agent"] = agent
    return attributes


class OpenTelemetryPlugin(_LitestarPlugin):
    """Litestar's plugin with :class:`ServerSpans` as its middleware."""

    def __init__(self, provider: TracerProvider, exclude: Sequence[str]) -> None:
        super().__init__(OpenTelemetryConfig(tracer_provider=provider, exclude=list(exclude)))
        self._provider, self._exclude = provider, exclude

    @property
    def middleware(self) -> Any:
        def wrap(app: ASGIApp) -> ASGIApp:
            return ServerSpans(app, self._provider, self._exclude)

        return wrap
