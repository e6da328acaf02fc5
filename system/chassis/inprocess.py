"""The mesh, in-process: an httpx transport that routes ``http://<service>/...`` to that
service's ASGI app, so a service and its upstreams run in one process without sockets.

Give it to ``create_app(..., mesh_transport=...)`` with ``mesh = {name: "http://<name>"}``
in the caller's settings. The apps' lifespans are the caller's business (enter them, in
one task, before the first call). Used by the unit tests and the in-process contract
suite alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx


class InProcessMesh(httpx.AsyncBaseTransport):
    """``http://<service>/...`` reaches that service's app; a name (``payments``) or a name
    and path prefix (``products/reservations``) added to :attr:`down` fails to connect,
    like an unreachable edge."""

    def __init__(self, apps: Mapping[str, Any]) -> None:
        """``apps``: service name → its ASGI app (a Litestar app built by the chassis)."""
        self.apps = {name: httpx.ASGITransport(app=app) for name, app in apps.items()}
        self.down: set[str] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        where = f"{request.url.host}{request.url.path}"
        if any(request.url.host == d or where.startswith(d) for d in self.down):
            raise httpx.ConnectError(f"{request.url.host} is down", request=request)
        return await self.apps[request.url.host].handle_async_request(request)


def mesh_urls(*names: str) -> dict[str, str]:
    """The ``mesh`` setting that sends every call to ``names`` through :class:`InProcessMesh`."""
    return {name: f"http://{name}" for name in names}


__all__ = ["InProcessMesh", "mesh_urls"]
