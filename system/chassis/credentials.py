"""A service's own token (client credentials), for calls to other services.

Fetched from ``users`` through the mesh (``POST /token``) on first use, shared by every
call, and renewed a minute before it expires.
"""

from __future__ import annotations

import asyncio
import time

from system.chassis.outbound import MeshClient, UpstreamFailed

RENEW_BEFORE_S = 60.0


class ServiceToken:
    def __init__(self, mesh: MeshClient, client_id: str, client_secret: str) -> None:
        self._mesh = mesh
        self._credentials = {"client_id": client_id, "client_secret": client_secret}
        self._token: str | None = None
        self._renew_at = 0.0
        self._lock = asyncio.Lock()

    async def headers(self) -> dict[str, str]:
        if self._token is None or time.monotonic() >= self._renew_at:
            async with self._lock:
                if self._token is None or time.monotonic() >= self._renew_at:
                    await self._fetch()
        return {"Authorization": f"Bearer {self._token}"}

    def invalidate(self) -> None:
        """Forget the token (a callee answered 401): the next call fetches a new one."""
        self._token = None

    async def _fetch(self) -> None:
        response = await self._mesh.request(
            "users", "POST", "/token", json=self._credentials, idempotent=True
        )
        if response.status_code != 200:
            raise UpstreamFailed(
                "users", f"the token request answered {response.status_code}", response
            )
        body = response.json()
        self._token = str(body["access_token"])
        self._renew_at = time.monotonic() + max(0.0, float(body["expires_in"]) - RENEW_BEFORE_S)
