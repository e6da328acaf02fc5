"""What the runtime tells each replica: its own prefixed settings, the stack's addresses."""

from __future__ import annotations

import json
from pathlib import Path

from system.runtime.components import service_env
from system.runtime.paths import StackPaths
from system.runtime.topology import parse_topology

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
