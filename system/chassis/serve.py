"""Run a service: ``python -m system.services.<name>``.

One process per replica: granian's embedded server in this process's event loop (a
separate worker process would double each replica's memory). On SIGTERM the server
stops accepting, drains in-flight requests, then the app's lifespan ends, which is when
the chassis flushes the outbox and the span exporter.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from granian.constants import Interfaces
from granian.server.embed import Server
from litestar import Litestar

from system.chassis.settings import ServiceSettings


async def _serve(app: Litestar, settings: ServiceSettings) -> None:
    server = Server(
        app,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        backlog=2048,
        log_access=False,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.stop)
    await server.serve()


def serve(build: Callable[[], Litestar], settings: ServiceSettings) -> None:
    asyncio.run(_serve(build(), settings))
