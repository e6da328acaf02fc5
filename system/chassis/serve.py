"""Run a service: ``python -m system.services.<name>``.

One process per replica: uvicorn's server (HTTP/1, httptools' C parser) in this
process's event loop. Every request is parsed, handled and answered on that one thread:
granian, the server before, handed each request from its Rust threads to the loop and
back, which cost about twice the CPU per request at the few concurrent requests a
service sees (``benchmarks/server_cost.py``). On SIGTERM the server stops accepting,
drains in-flight requests, then the app's lifespan ends, which is when the chassis
flushes the outbox and the span exporter.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Callable, Iterator

import uvicorn
import uvloop
from litestar import Litestar
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from system.chassis.settings import ServiceSettings

KEEP_ALIVE_S = 4000
"""Idle keep-alive connections stay open longer than Envoy keeps its idle upstream
connections (one hour): the proxy, not the server, closes them, so Envoy never sends a
request on a connection the server is closing."""

DRAIN_S = 5
"""On SIGTERM, requests in flight get this long to finish before they are cancelled, so
the lifespan's shutdown (outbox and span flush) still runs within the supervisor's
grace (15 s) before its SIGKILL."""


class HeadersWithBody:
    """A connection's transport as uvicorn's response cycle writes to it: the status line
    and headers, which uvicorn writes on ``http.response.start``, are held and go out
    with the body's first write, in one ``send`` instead of two.

    Two writes a response meant two segments on loopback and, often, two wake-ups of
    Envoy on the other core to read one answer. A held header block that no body write
    follows (an app that streams slowly, or fails after starting) is written at the end
    of the loop's current turn, or at once by ``close``. Interim answers
    (``100 Continue``) and everything else pass straight through."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._held is not None:
            data, self._held = self._held + data, None
        elif data.startswith(b"HTTP/1.1 ") and data.endswith(b"\r\n\r\n") and data[9:10] != b"1":
            self._held = data
            self._loop.call_soon(self.flush)
            return
        self._transport.write(data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> object:
        return getattr(self._transport, name)


class OneWriteHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering through :class:`HeadersWithBody`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = HeadersWithBody(transport, self.loop)  # type: ignore[assignment]


class _Server(uvicorn.Server):
    """uvicorn's server with the process's signals left to :func:`_serve`: uvicorn's own
    handlers re-raise the signal once it has shut down, which would end the process by
    SIGTERM instead of letting the runner close the loop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def server(app: Litestar, settings: ServiceSettings) -> uvicorn.Server:
    """The server of one replica, not started."""
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="none",  # the running loop: see serve()
        http=OneWriteHttpTools,
        ws="none",
        lifespan="on",
        log_config=None,  # the chassis' JSON logging stays as configured
        access_log=False,  # Envoy logs every request
        proxy_headers=False,
        server_header=False,
        backlog=2048,
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=DRAIN_S,
    )
    return _Server(config)


async def _serve(app: Litestar, settings: ServiceSettings) -> None:
    running = server(app, settings)

    def stop() -> None:
        running.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    await running.serve()  # a failing lifespan start-up exits with status 3 (logged)


def _freeze_startup_heap() -> None:
    """Move everything alive once the service has started (modules, classes, the ORM's
    metadata, compiled caches, clients) to the collector's permanent generation.

    Otherwise each full collection walks that heap again: 100-330 ms with the service
    stopped, once in every service during a 20 s benchmark run, which was the tail of
    the order path (202 p99 150-250 ms at 30 orders/s, 40 ms since). Objects created
    later are still collected as usual."""
    gc.collect()
    gc.freeze()


def serve(build: Callable[[], Litestar], settings: ServiceSettings) -> None:
    """Build the app and serve it until SIGTERM, on uvloop unless the settings say
    ``event_loop=asyncio`` (uvloop's loop is C: every request, SQL statement and Kafka
    fetch goes through the loop, and the standard one was a visible share of the CPU)."""
    factory = uvloop.new_event_loop if settings.event_loop == "uvloop" else None
    app = build()
    app.on_startup.append(_freeze_startup_heap)  # runs after the lifespans started
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_serve(app, settings))
