"""Token checks in every service: a verified token is remembered until it expires, never
longer, and a token that fails verification is never remembered."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

from litestar import Request, get
from litestar.testing import AsyncTestClient

from system.chassis.app import ServiceParts, create_app
from system.chassis.keys import KeyFiles, key_id
from system.chassis.settings import ServiceSettings
from system.services.users.security import TokenIssuer


@get("/whoami")
async def whoami(request: Request) -> dict[str, str]:  # type: ignore[type-arg]
    return {"user": request.user.user_id, "role": request.user.role}


def issuer(keys: KeyFiles, ttl: timedelta) -> TokenIssuer:
    public = keys.public.read_bytes()
    return TokenIssuer(
        keys.private.read_bytes(), key_id(public), "microharness-users", "microharness", ttl
    )


async def test_a_remembered_token_expires_when_the_token_does(tmp_path: Path) -> None:
    keys = KeyFiles(tmp_path / "jwt").ensure()
    app = create_app(
        ServiceSettings(
            name="authed",
            data_dir=tmp_path,
            log_json=False,
            log_level="CRITICAL",
            jwt_public_key_file=keys.public,
        ),
        ServiceParts(route_handlers=[whoami]),
    )
    lasting = issuer(keys, timedelta(hours=1)).issue(user_id="u-1", role="customer", email="")
    brief = issuer(keys, timedelta(seconds=2)).issue(user_id="u-2", role="admin", email="")
    issued = time.time()
    header, payload, signature = lasting.split(".")
    forged = f"{header}.{payload}.{signature[:-4]}AAAA"
    async with AsyncTestClient(app) as client:
        for _ in range(2):
            answer = await client.get("/whoami", headers={"Authorization": f"Bearer {lasting}"})
            assert answer.json() == {"user": "u-1", "role": "customer"}
            refused = await client.get("/whoami", headers={"Authorization": f"Bearer {forged}"})
            assert refused.status_code == 401
        assert (await client.get("/whoami")).status_code == 401
        bearer = {"Authorization": f"Bearer {brief}"}
        assert (await client.get("/whoami", headers=bearer)).json()["user"] == "u-2"
        deadline = time.monotonic() + 10
        while (await client.get("/whoami", headers=bearer)).status_code == 200:
            assert time.monotonic() < deadline, "an expired token was still accepted"
            await asyncio.sleep(0.05)
        # refused from its expiry on (the token's exp has whole seconds), not before
        assert time.time() >= int(issued) + 2 - 1
