"""The topology: parsing, validation and the port plan every config is generated from."""

from __future__ import annotations

from pathlib import Path

import pytest

from system.runtime.topology import (
    PORT_SPAN,
    TopologyError,
    load_topology,
    parse_topology,
)

SHOP = {
    "port_base": 30000,
    "kafka": {"topics": {"orders.events": 6}},
    "services": {
        "products": {"replicas": 2},
        "payments": {},
        "orders": {"calls": ["products", "payments"]},
    },
}


def test_ports_are_offsets_from_the_base() -> None:
    topology = parse_topology(SHOP)
    ports = topology.ports
    assert ports.gateway == 30000
    assert ports.kafka == 30010
    assert len(set(ports.as_dict().values())) == len(ports.as_dict())
    assert all(30000 <= p < 30000 + PORT_SPAN for p in topology.all_ports().values())


def test_replicas_and_mesh_listeners_get_distinct_ports() -> None:
    topology = parse_topology(SHOP)
    products = topology.service("products")
    assert [topology.ports.replica(products, r) for r in (1, 2)] == [30201, 30202]
    assert topology.ports.mesh(topology.service("orders")) == 30102
    everything = topology.all_ports()
    assert len(set(everything.values())) == len(everything)
    assert {"products-1", "products-2", "payments-1", "mesh.orders"} <= everything.keys()


def test_two_stacks_a_span_apart_share_no_port() -> None:
    first = parse_topology(SHOP)
    second = first.with_overrides(port_base=first.port_base + PORT_SPAN)
    assert not set(first.all_ports().values()) & set(second.all_ports().values())


def test_overrides_change_replicas_and_are_validated() -> None:
    topology = parse_topology(SHOP).with_overrides(replicas={"payments": 3})
    assert topology.service("payments").replicas == 3
    with pytest.raises(TopologyError, match=r"replicas = 0: choose 1\.\.9"):
        topology.with_overrides(replicas={"payments": 0})
    with pytest.raises(TopologyError, match="no service named 'nope'"):
        topology.with_overrides(replicas={"nope": 2})


def test_the_database_is_a_validated_stack_level_choice() -> None:
    topology = parse_topology(SHOP)
    assert topology.database == "sqlite"
    assert topology.with_overrides(database="postgres").uses_postgres
    with pytest.raises(TopologyError, match="database 'mysql' is not supported: choose sqlite"):
        topology.with_overrides(database="mysql")


def test_new_ports_come_last_so_existing_offsets_stay() -> None:
    ports = parse_topology(SHOP).with_overrides(port_base=30000).ports
    assert (ports.kafka_controller, ports.postgres, ports.postgres_server) == (30013, 30014, 30015)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"port_base": 80}, "port_base 80 is out of range"),
        ({"services": {"Bad-Name": {}}}, "service name 'Bad-Name'"),
        ({"services": {"a": {"calls": ["ghost"]}}}, "calls names unknown 'ghost'"),
        ({"kafka": {"topics": {"x": 0}}}, "topic 'x'"),
        ({"kafka": {"topics": {"x": {"partitions": 3, "compact": True}}}}, r"x: unknown keys"),
        ({"services": {"a": {"replicas": "two"}}}, "topology is malformed"),
    ],
)
def test_bad_topologies_are_refused_with_the_field_named(data: dict, message: str) -> None:
    with pytest.raises(TopologyError, match=message):
        parse_topology(data)


def test_the_default_topology_file_loads() -> None:
    topology = load_topology()
    assert {t.name for t in topology.topics} >= {"orders.events", "users.events"}
    # the catalog's prices are a table: Kafka keeps the latest per product
    assert {t.name for t in topology.topics if t.compacted} == {"products.catalog"}


def test_a_topic_is_a_partition_count_or_a_table_of_settings() -> None:
    topics = parse_topology({"kafka": {"topics": {"log": 6, "table": {"compacted": True}}}}).topics
    assert [(t.name, t.partitions, t.compacted) for t in topics] == [
        ("log", 6, False),
        ("table", 3, True),
    ]


def test_a_missing_or_broken_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="does not exist"):
        load_topology(tmp_path / "none.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("port_base = [")
    with pytest.raises(TopologyError, match="not valid TOML"):
        load_topology(broken)


def test_service_argv_fills_the_template() -> None:
    topology = parse_topology(
        {"services": {"echo": {"command": ["{python}", "-m", "x", "--port={port}", "{replica}"]}}}
    )
    echo = topology.service("echo")
    assert echo.argv(python="py", port=7, replica=2) == ["py", "-m", "x", "--port=7", "2"]
    default = parse_topology({"services": {"users": {}}}).service("users")
    assert default.argv(python="py", port=9, replica=1) == ["py", "-m", "system.services.users"]
