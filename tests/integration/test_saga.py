"""The order saga on the real stack, through the gateway: outcomes checked in every
service that took part, idempotency, a replica killed mid-saga, and one trace per saga."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.faults import Faults
from harness.target import local_target
from system.runtime.paths import StackPaths
from system.runtime.postgres import connect_admin
from system.runtime.state import StackSettings
from system.runtime.topology import load_topology
from tests.conftest import poll_until

pytestmark = [pytest.mark.integration, pytest.mark.system, pytest.mark.xdist_group("services")]


@pytest.fixture(scope="module")
def gateway(service_stack: dict[str, Any]) -> Iterator[httpx.Client]:
    base = f"http://127.0.0.1:{service_stack['ports']['gateway']}/api/v1"
    with httpx.Client(base_url=base, timeout=15) as client:
        yield client


@pytest.fixture(scope="module")
def admin(gateway: httpx.Client, service_stack: dict[str, Any]) -> dict[str, str]:
    password = (Path(service_stack["data_dir"]) / "users" / "admin-password").read_text()
    response = gateway.post(
        "/users/login", json={"email": "admin@microharness.test", "password": password.strip()}
    )
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def new_product(gateway: httpx.Client, admin: dict[str, str], stock: int) -> str:
    created = gateway.post(
        "/products/",
        headers=admin,
        json={
            "sku": f"SAGA-{secrets.token_hex(4)}",
            "name": "Saga lamp",
            "price_cents": 1500,
            "initial_stock": stock,
        },
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def place(
    gateway: httpx.Client,
    headers: dict[str, str],
    product: str,
    quantity: int = 1,
    card: str = "tok_visa_4242",
    key: str | None = None,
) -> httpx.Response:
    return gateway.post(
        "/orders/",
        headers={**headers, "Idempotency-Key": key or secrets.token_hex(8)},
        json={"items": [{"product_id": product, "quantity": quantity}], "card_token": card},
    )


def terminal(gateway: httpx.Client, headers: dict[str, str], order_id: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        order: dict[str, Any] = gateway.get(f"/orders/{order_id}", headers=headers).json()
        return order if order["status"] in ("CONFIRMED", "CANCELLED") else None

    return poll_until(check, f"order {order_id} to finish", timeout=60)


def revenue(gateway: httpx.Client, admin: dict[str, str]) -> int:
    summary = gateway.get("/analytics/summary", headers=admin)
    assert summary.status_code == 200, summary.text
    return int(summary.json()["revenue_cents"])


def stock(gateway: httpx.Client, admin: dict[str, str], product: str) -> dict[str, int]:
    levels: dict[str, int] = gateway.get(f"/products/{product}", headers=admin).json()["stock"]
    return levels


def test_a_confirmed_order_sells_stock_captures_payment_notifies_and_counts(
    gateway: httpx.Client, admin: dict[str, str]
) -> None:
    product = new_product(gateway, admin, stock=3)
    revenue_before = revenue(gateway, admin)
    placed = place(gateway, admin, product, quantity=2)
    assert placed.status_code == 202, placed.text
    assert placed.headers["location"].endswith(placed.json()["order_id"])
    order = terminal(gateway, admin, placed.json()["order_id"])
    assert order["status"] == "CONFIRMED"
    # products and payments settle from order.confirmed, through Kafka
    poll_until(
        lambda: (
            stock(gateway, admin, product)
            == {"available": 1, "reserved": 0, "sold": 2, "received": 3}
        ),
        "stock sold",
    )
    poll_until(
        lambda: (
            gateway.get(f"/payments/{order['order_id']}", headers=admin).json()["status"]
            == "captured"
        ),
        "payment captured",
    )

    def notified() -> list[dict[str, Any]]:
        items = gateway.get("/notifications/me?limit=100", headers=admin).json()["items"]
        return [
            n
            for n in items
            if n["event_type"] == "order.confirmed" and order["order_id"] in n["subject"]
        ]

    assert len(poll_until(notified, "the confirmation notification")) == 1
    poll_until(
        lambda: revenue(gateway, admin) >= revenue_before + order["total_cents"],
        "analytics revenue up by the order's total",
    )


def test_a_declined_card_releases_stock_and_cancels_with_the_reason(
    gateway: httpx.Client, admin: dict[str, str]
) -> None:
    product = new_product(gateway, admin, stock=1)
    placed = place(gateway, admin, product, card="tok_decline_4000")
    order = terminal(gateway, admin, placed.json()["order_id"])
    assert (order["status"], order["reason"]) == ("CANCELLED", "card_declined")
    assert stock(gateway, admin, product) == {
        "available": 1,
        "reserved": 0,
        "sold": 0,
        "received": 1,
    }
    payment = gateway.get(f"/payments/{order['order_id']}", headers=admin).json()
    assert payment["status"] == "declined"


def test_out_of_stock_cancels(gateway: httpx.Client, admin: dict[str, str]) -> None:
    product = new_product(gateway, admin, stock=1)
    order = terminal(gateway, admin, place(gateway, admin, product, quantity=2).json()["order_id"])
    assert (order["status"], order["reason"]) == ("CANCELLED", "out_of_stock")
    assert gateway.get(f"/payments/{order['order_id']}", headers=admin).status_code == 404


def test_the_same_idempotency_key_twice_is_one_order(
    gateway: httpx.Client, admin: dict[str, str]
) -> None:
    product = new_product(gateway, admin, stock=5)
    key = f"idem-{secrets.token_hex(6)}"
    first = place(gateway, admin, product, key=key)
    again = place(gateway, admin, product, key=key)
    changed = place(gateway, admin, product, quantity=2, key=key)
    assert first.status_code == again.status_code == 202
    assert first.json()["order_id"] == again.json()["order_id"]
    assert changed.status_code == 409
    terminal(gateway, admin, first.json()["order_id"])
    poll_until(lambda: stock(gateway, admin, product)["sold"] == 1, "one unit sold")
    assert stock(gateway, admin, product) == {
        "available": 4,
        "reserved": 0,
        "sold": 1,
        "received": 5,
    }


@pytest.mark.fault
def test_a_saga_interrupted_by_sigkill_of_its_replica_finishes_after_the_restart(
    gateway: httpx.Client, admin: dict[str, str], service_stack: dict[str, Any]
) -> None:
    product = new_product(gateway, admin, stock=2)
    placed = place(gateway, admin, product)  # payments answers after 400 ms: mid-saga
    orders = next(p for p in service_stack["processes"] if p["name"] == "orders-1")
    os.kill(orders["pid"], signal.SIGKILL)
    order = terminal(gateway, admin, placed.json()["order_id"])
    assert order["status"] == "CONFIRMED"
    history = gateway.get(f"/orders/{order['order_id']}/history", headers=admin).json()
    assert [h["type"] for h in history] == [
        "placed",
        "stock_reserved",
        "payment_authorized",
        "confirmed",
    ]
    poll_until(
        lambda: (
            stock(gateway, admin, product)
            == {"available": 1, "reserved": 0, "sold": 1, "received": 2}
        ),
        "stock sold once",
    )


async def drop_service_connections(server_port: int) -> int:
    """Terminate every server process of a client connection to a service's database
    (straight to the server, not through Toxiproxy); how many there were."""
    server = await connect_admin(server_port)
    try:
        rows = await server.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname <> 'postgres' AND pid <> pg_backend_pid()"
        )
    finally:
        await server.close()
    return sum(1 for row in rows if row[0])


@pytest.mark.fault
def test_pooled_database_connections_the_server_dropped_are_replaced_before_use(
    gateway: httpx.Client, admin: dict[str, str], service_stack: dict[str, Any]
) -> None:
    paths = StackPaths.for_stack("services", Path(service_stack["home"]))
    if StackSettings.load(paths).database != "postgres":
        pytest.skip("SQLite is a file in each service: no connection to drop (PostgreSQL pass)")
    product = new_product(gateway, admin, stock=4)
    warm = place(gateway, admin, product)  # every service on the saga's path has pooled
    assert terminal(gateway, admin, warm.json()["order_id"])["status"] == "CONFIRMED"
    dropped = asyncio.run(drop_service_connections(service_stack["ports"]["postgres_server"]))
    assert dropped > 0, "no service held a connection to drop"
    # every pooled connection is dead now: each is found so at checkout and replaced,
    # so no request and no saga step sees the loss
    for _ in range(3):
        placed = place(gateway, admin, product)
        assert placed.status_code == 202, placed.text
        order = gateway.get(f"/orders/{placed.json()['order_id']}", headers=admin)
        assert order.status_code == 200, order.text
        assert terminal(gateway, admin, placed.json()["order_id"])["status"] == "CONFIRMED"
    poll_until(lambda: stock(gateway, admin, product)["sold"] == 4, "four units sold")


def catalog_events_seen(service_stack: dict[str, Any]) -> float:
    """``product.priced`` events orders' consumer has applied (from the replica's own
    ``/metrics``: Prometheus would add its scrape interval)."""
    topology = load_topology(Path(service_stack["home"]) / "topology.toml")
    ports = dataclasses.replace(topology, port_base=service_stack["port_base"]).all_ports()
    port = ports["orders-1"]
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "inbox_processed"
        for sample in family.samples
        if sample.name == "inbox_processed_total"
        and sample.labels.get("event_type") == "product.priced"
    )


@pytest.mark.fault
def test_an_order_is_placed_at_the_latest_price_while_products_is_unreachable(
    gateway: httpx.Client, admin: dict[str, str], service_stack: dict[str, Any], tmp_path: Path
) -> None:
    """orders prices from its copy of the catalog (``product.priced`` on Kafka), so
    placing an order needs no call to products; the saga's reservation waits for it."""
    before = catalog_events_seen(service_stack)
    product = new_product(gateway, admin, stock=2)  # at 1500
    repriced = gateway.patch(f"/products/{product}", headers=admin, json={"price_cents": 1700})
    assert repriced.status_code == 200, repriced.text
    poll_until(
        lambda: catalog_events_seen(service_stack) >= before + 2,
        "orders to apply the product's two prices",
    )
    paths = StackPaths.for_stack("services", Path(service_stack["home"]))
    faults = Faults.for_target(
        local_target(paths, service_stack), seed=20261130, log_path=tmp_path / "faults.jsonl"
    )
    try:
        with faults.edge_abort("products", status=503):
            placed = place(gateway, admin, product)
            # a product orders never heard of is priced by asking products: unreachable
            unknown = place(gateway, admin, str(uuid.uuid4()))
    finally:
        faults.close()
    assert all(r.reverted for r in faults.records), faults.records
    assert placed.status_code == 202, placed.text
    assert placed.json()["items"][0]["unit_price_cents"] == 1700
    assert unknown.status_code == 503, unknown.text
    order = terminal(gateway, admin, placed.json()["order_id"])  # reserved once reachable
    assert order["status"] == "CONFIRMED", order
    assert order["total_cents"] == 1700


def test_one_saga_is_one_trace_across_http_and_kafka(
    gateway: httpx.Client, admin: dict[str, str], service_stack: dict[str, Any]
) -> None:
    product = new_product(gateway, admin, stock=2)
    trace_id = secrets.token_hex(16)
    placed = gateway.post(
        "/orders/",
        json={"items": [{"product_id": product, "quantity": 1}], "card_token": "tok_visa_4242"},
        headers={
            **admin,
            "Idempotency-Key": secrets.token_hex(8),
            "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01",
        },
    )
    terminal(gateway, admin, placed.json()["order_id"])
    jaeger = f"http://127.0.0.1:{service_stack['ports']['jaeger_query']}/api/v3/traces/{trace_id}"

    def spans() -> list[tuple[str, str]] | None:
        got = httpx.get(jaeger)
        if got.status_code != 200:
            return None
        found = [
            (
                next(
                    a["value"]["stringValue"]
                    for a in rs["resource"]["attributes"]
                    if a["key"] == "service.name"
                ),
                span["name"],
            )
            for rs in got.json()["result"]["resourceSpans"]
            for ss in rs["scopeSpans"]
            for span in ss["spans"]
        ]
        names = {f"{service}:{name}" for service, name in found}
        wanted = (
            "gateway:",
            "orders:saga reserve",
            "orders:saga authorize",
            "products:",
            "payments:",
            "products:orders.events process",
            "payments:orders.events process",
        )
        return found if all(any(n.startswith(w) for n in names) for w in wanted) else None

    poll_until(spans, "the saga's HTTP steps and the Kafka consumers in one trace", timeout=40)
