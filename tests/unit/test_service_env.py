"""What the runtime tells each replica: its own prefixed settings, the stack's addresses."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from system.runtime import components, tools
from system.runtime.components import INFRASTRUCTURE, build_specs, preflight, service_env
from system.runtime.paths import StackPaths
from system.runtime.state import StackSettings
from system.runtime.topology import TopologyError, parse_topology

TOPOLOGY = parse_topology(
    {
        "port_base": 40000,
        "services": {
            "users": {"issues_tokens": True},
            "products": {"replicas": 2},
            "orders": {"calls": ["products"], "env": {"ORDERS_SAGA_TIMEOUT_S": "5"}},
        },
    }
)


def test_each_replica_gets_its_prefixed_settings(tmp_path: Path) -> None:
    paths = StackPaths(tmp_path)
    env = service_env(TOPOLOGY, paths, "products", 2)
    assert env["PRODUCTS_PORT"] == "40212"
    assert env["PRODUCTS_REPLICA"] == "products-2"
    assert env["PRODUCTS_KAFKA_BOOTSTRAP"] == "127.0.0.1:40010"
    assert env["PRODUCTS_OTLP_ENDPOINT"] == "http://127.0.0.1:40005"
    assert env["PRODUCTS_DATA_DIR"] == str(tmp_path / "data" / "products")
    assert env["PRODUCTS_JWT_PUBLIC_KEY_FILE"] == str(tmp_path / "data" / "jwt" / "public.pem")
    assert "PRODUCTS_JWT_PRIVATE_KEY_FILE" not in env
    assert not [k for k in env if k.startswith(("USERS_", "ORDERS_"))]


def test_on_postgres_each_service_gets_its_own_database_through_the_proxy(
    tmp_path: Path,
) -> None:
    paths = StackPaths(tmp_path)
    assert not [k for k in service_env(TOPOLOGY, paths, "products", 1) if "DATABASE" in k]
    on_postgres = TOPOLOGY.with_overrides(database="postgres")
    env = service_env(on_postgres, paths, "products", 2)
    assert env["PRODUCTS_DATABASE_URL"] == "postgresql+asyncpg://postgres@127.0.0.1:40014/products"
    users = service_env(on_postgres, paths, "users", 1)
    assert users["USERS_DATABASE_URL"].endswith(":40014/users")


def test_replicas_of_one_service_take_turns_at_relaying_its_outbox(tmp_path: Path) -> None:
    paths = StackPaths(tmp_path)
    assert service_env(TOPOLOGY, paths, "products", 1)["PRODUCTS_OUTBOX_SHARED"] == "true"
    assert "ORDERS_OUTBOX_SHARED" not in service_env(TOPOLOGY, paths, "orders", 1)


def test_callers_learn_the_mesh_address_of_each_callee(tmp_path: Path) -> None:
    env = service_env(TOPOLOGY, StackPaths(tmp_path), "orders", 1)
    assert json.loads(env["ORDERS_MESH"]) == {"products": "http://127.0.0.1:40101"}
    assert env["ORDERS_SAGA_TIMEOUT_S"] == "5"


def test_only_the_issuer_gets_the_private_key(tmp_path: Path) -> None:
    env = service_env(TOPOLOGY, StackPaths(tmp_path), "users", 1)
    assert env["USERS_JWT_PRIVATE_KEY_FILE"].endswith("private.pem")


def test_callers_get_a_client_secret_the_issuer_knows(tmp_path: Path) -> None:
    paths = StackPaths(tmp_path)
    orders = service_env(TOPOLOGY, paths, "orders", 1)
    users = service_env(TOPOLOGY, paths, "users", 1)
    clients = json.loads(Path(users["USERS_SERVICE_CLIENTS_FILE"]).read_text())
    assert clients == {"orders": orders["ORDERS_CLIENT_SECRET"]}
    assert "PRODUCTS_CLIENT_SECRET" not in service_env(TOPOLOGY, paths, "products", 1)
    assert (
        service_env(TOPOLOGY, paths, "orders", 1)["ORDERS_CLIENT_SECRET"]
        == (orders["ORDERS_CLIENT_SECRET"])
    ), "made once per stack"


def test_on_postgres_every_replica_waits_for_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tools, "postgres_binary", lambda: Path("/pg/bin/postgres"))
    settings = StackSettings(without=INFRASTRUCTURE, database="postgres")
    specs = build_specs(
        TOPOLOGY.with_overrides(database="postgres"), StackPaths(tmp_path), settings
    )
    server, *replicas = specs
    assert server.name == "postgres"
    assert server.argv[:5] == (
        "/pg/bin/postgres",
        "-D",
        str(tmp_path / "data" / "postgres"),
        "-p",
        "40015",
    )
    assert "listen_addresses=127.0.0.1" in server.argv
    assert server.user == ("postgres" if os.geteuid() == 0 else None)
    assert [r.after for r in replicas] == [("postgres",)] * 4
    on_sqlite = build_specs(TOPOLOGY, StackPaths(tmp_path), StackSettings(without=INFRASTRUCTURE))
    assert [s.after for s in on_sqlite] == [()] * 4


def test_preflight_looks_for_postgres_only_when_the_stack_uses_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def missing() -> None:
        raise tools.ToolMissing("PostgreSQL is not installed")

    monkeypatch.setitem(components.REQUIRED_TOOLS, "postgres", (missing,))
    preflight(INFRASTRUCTURE, "sqlite")
    with pytest.raises(tools.ToolMissing, match="PostgreSQL"):
        preflight(INFRASTRUCTURE, "postgres")


def test_a_missing_postgres_names_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tools, "POSTGRES_BIN_GLOB", str(tmp_path / "none" / "*" / "bin"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(tools.ToolMissing, match=r"run `make bootstrap` \(Debian package postgres"):
        tools.initdb_binary()


def test_a_stack_adds_environment_per_service_over_the_topology_own(tmp_path: Path) -> None:
    changed = TOPOLOGY.with_overrides(env={"orders": {"ORDERS_LEASE_S": "2"}})
    assert changed.service("orders").env == {"ORDERS_SAGA_TIMEOUT_S": "5", "ORDERS_LEASE_S": "2"}
    assert changed.service("users").env == {}
    env = service_env(changed, StackPaths(tmp_path), "orders", 0)
    assert env["ORDERS_LEASE_S"] == "2"
    with pytest.raises(TopologyError, match="no service named 'nope'"):
        TOPOLOGY.with_overrides(env={"nope": {"X": "1"}})
