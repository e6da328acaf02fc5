"""Run a service: ``python -m system.services.<name>``.

One process per replica: granian's embedded server in this process's event loop (a
separate worker process would double each replica's memory). On SIGTERM the server
stops accepting, drains in-flight requests, then the app's lifespan ends, which is when
the chassis flushes the outbox and the span exporter.
"""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Callable

import uvloop
from granian.constants import HTTPModes, Interfaces
from granian.server.embed import Server
from litestar import Litestar

from system.chassis.settings import ServiceSettings


async def _serve(app: Litestar, settings: ServiceSettings) -> None:
    server = Server(
        app,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        http=HTTPModes.http1,
        websockets=False,
        backlog=2048,
        log_access=False,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.stop)
    await server.serve()


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
