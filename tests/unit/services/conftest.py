"""In-process service tests: each app on its own SQLite file, tokens signed by a test key."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from system.chassis.keys import KeyFiles, key_id
from system.services.users.security import TokenIssuer

Headers = dict[str, str]


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyFiles:
    return KeyFiles(tmp_path_factory.mktemp("jwt")).ensure()


@pytest.fixture(scope="session")
def issuer(keys: KeyFiles) -> TokenIssuer:
    return TokenIssuer(
        keys.private.read_bytes(),
        key_id(keys.public.read_bytes()),
        "microharness-users",
        "microharness",
        timedelta(hours=1),
    )


@pytest.fixture(scope="session")
def auth(issuer: TokenIssuer) -> Callable[..., Headers]:
    def headers(role: str = "customer", user_id: str = "user-1") -> Headers:
        token = issuer.issue(user_id=user_id, role=role, email=f"{user_id}@example.test")
        return {"Authorization": f"Bearer {token}"}

    return headers


async def client_of(app: Litestar) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app) as client:
        yield client


def data_dir(tmp_path: Path, name: str) -> Path:
    return tmp_path / name
