"""users: register, login, me, JWKS; tokens other services accept; user.registered staged."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import jsonschema_rs
import jwt
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import select

from system.chassis.keys import KeyFiles, key_id
from system.chassis.outbox import OutboxMessage
from system.services.users.app import build
from system.services.users.security import TokenIssuer
from system.services.users.settings import UsersSettings

pytestmark = pytest.mark.asyncio
ADA = {"email": "Ada@Example.test", "password": "correct horse battery"}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[AsyncTestClient[Litestar]]:
    settings = UsersSettings(
        data_dir=tmp_path / "users", log_json=False, admin_password="s3cret-admin"
    )
    async with AsyncTestClient(build(settings)) as client:
        yield client


async def login(client: AsyncTestClient[Litestar], body: dict[str, str]) -> str:
    response = await client.post("/login", json=body)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def test_register_login_me(client: AsyncTestClient[Litestar]) -> None:
    created = await client.post("/register", json=ADA)
    assert created.status_code == 201
    assert created.json()["email"] == "ada@example.test"
    assert created.json()["role"] == "customer"
    token = await login(client, {"email": "ada@example.test", "password": ADA["password"]})
    me = await client.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert me.json()["id"] == created.json()["id"]


async def test_the_token_is_rs256_with_role_and_verifies_against_the_jwks(
    client: AsyncTestClient[Litestar],
) -> None:
    await client.post("/register", json=ADA)
    token = await login(client, ADA)
    jwks = (await client.get("/.well-known/jwks.json")).json()
    key = jwt.PyJWK(jwks["keys"][0])
    assert jwt.get_unverified_header(token)["kid"] == jwks["keys"][0]["kid"]
    claims = jwt.decode(
        token, key.key, algorithms=["RS256"], audience="microharness", issuer="microharness-users"
    )
    assert claims["role"] == "customer"
    assert claims["exp"] - claims["iat"] == 3600


async def test_registering_twice_is_a_409_problem(client: AsyncTestClient[Litestar]) -> None:
    await client.post("/register", json=ADA)
    again = await client.post("/register", json={**ADA, "email": "ADA@example.test"})
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert again.json()["detail"] == "ada@example.test is already registered"


@pytest.mark.parametrize(
    "body",
    [
        {"email": "not-an-email", "password": "long enough"},
        {"email": "a@b.test", "password": "short"},
        {"email": "a@b.test", "password": "long enough", "role": "admin"},
        {"email": "a@b.test"},
    ],
)
async def test_bad_registrations_are_400_problems_and_store_nothing(
    client: AsyncTestClient[Litestar], body: dict[str, str]
) -> None:
    response = await client.post("/register", json=body)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert (
        await client.post("/login", json={"email": "a@b.test", "password": "long enough"})
    ).status_code == 401


async def test_a_wrong_password_and_an_unknown_email_look_the_same(
    client: AsyncTestClient[Litestar],
) -> None:
    await client.post("/register", json=ADA)
    wrong = await client.post("/login", json={**ADA, "password": "wrong password"})
    unknown = await client.post("/login", json={"email": "nobody@example.test", "password": "x"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["detail"] == unknown.json()["detail"]


async def test_the_seeded_admin_gets_an_admin_token(client: AsyncTestClient[Litestar]) -> None:
    token = await login(client, {"email": "admin@microharness.test", "password": "s3cret-admin"})
    assert jwt.decode(token, options={"verify_signature": False})["role"] == "admin"


@pytest.mark.parametrize("problem", ["missing", "forged", "expired", "garbage"])
async def test_me_refuses_a_bad_token_with_401(
    client: AsyncTestClient[Litestar], tmp_path: Path, problem: str
) -> None:
    other = KeyFiles(tmp_path / "other").ensure()
    forged = TokenIssuer(
        other.private.read_bytes(),
        key_id(other.public.read_bytes()),
        "microharness-users",
        "microharness",
        timedelta(hours=1),
    )
    headers: dict[str, str] = {}
    if problem == "forged":
        headers["Authorization"] = "Bearer " + forged.issue(user_id="x", role="admin", email="")
    elif problem == "expired":
        own = client.app.state.token_issuer
        expired = TokenIssuer(
            own.private_pem, own.kid, own.issuer, own.audience, timedelta(seconds=-120)
        )
        headers["Authorization"] = "Bearer " + expired.issue(user_id="x", role="admin", email="")
    elif problem == "garbage":
        headers["Authorization"] = "Bearer not.a.token"
    response = await client.get("/me", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


async def test_registration_stages_user_registered_in_the_same_transaction(
    client: AsyncTestClient[Litestar],
) -> None:
    created = (await client.post("/register", json=ADA)).json()
    await client.post("/register", json=ADA)  # the failed duplicate stages nothing
    async with client.app.state.events.session_maker() as session:
        rows = (await session.scalars(select(OutboxMessage))).all()
    assert [(r.event_type, r.key) for r in rows] == [("user.registered", created["id"])]


async def test_a_service_trades_its_client_secret_for_a_service_token(tmp_path: Path) -> None:
    clients = tmp_path / "clients.json"
    clients.write_text('{"orders": "orders-secret-0123456789"}')
    settings = UsersSettings(data_dir=tmp_path / "u", log_json=False, service_clients_file=clients)
    async with AsyncTestClient(build(settings)) as client:
        good = await client.post(
            "/token", json={"client_id": "orders", "client_secret": "orders-secret-0123456789"}
        )
        wrong = await client.post(
            "/token", json={"client_id": "orders", "client_secret": "not-the-secret-at-all"}
        )
        unknown = await client.post(
            "/token", json={"client_id": "payments", "client_secret": "orders-secret-0123456789"}
        )
    assert good.status_code == 200
    claims = jwt.decode(good.json()["access_token"], options={"verify_signature": False})
    assert (claims["sub"], claims["role"]) == ("svc:orders", "service")
    assert wrong.status_code == unknown.status_code == 401


async def test_me_with_a_service_token_is_a_404_not_a_500(tmp_path: Path) -> None:
    """Found by the contract suite: a token whose subject is no account id (a service's
    ``svc:<name>``) made ``GET /me`` fail with a 500."""
    clients = tmp_path / "clients.json"
    clients.write_text('{"orders": "orders-secret-0123456789"}')
    settings = UsersSettings(data_dir=tmp_path / "u", log_json=False, service_clients_file=clients)
    async with AsyncTestClient(build(settings)) as client:
        token = await client.post(
            "/token", json={"client_id": "orders", "client_secret": "orders-secret-0123456789"}
        )
        me = await client.get(
            "/me", headers={"Authorization": f"Bearer {token.json()['access_token']}"}
        )
    assert me.status_code == 404
    assert me.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("space", ["\x1e", "\x85", "\ufeff", "\u00a0"])
async def test_the_server_and_the_documented_email_pattern_agree_on_spaces(
    client: AsyncTestClient[Litestar], space: str
) -> None:
    """Found by the contract suite: ``\\s`` means other characters to Python (the server)
    and ECMAScript (the schema's readers), so the schema accepted e-mails the server did
    not; now both refuse an e-mail with any of them."""
    email = f"a{space}b@example.test"
    schema = (await client.get("/schema/openapi.json")).json()
    pattern = schema["components"]["schemas"]["Registration"]["properties"]["email"]["pattern"]
    assert not jsonschema_rs.validator_for({"type": "string", "pattern": pattern}).is_valid(email)
    response = await client.post("/register", json={"email": email, "password": "long-enough-1"})
    assert response.status_code == 400
