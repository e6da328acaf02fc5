"""A real local stack for the runtime's integration tests, on ports nobody else uses.

Two services, ``alpha`` (2 replicas) and ``beta``, are the small real upstream in
``upstream.py``; the gateway's per-client rate limit is low so a burst can exceed it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.localstack import events_only_topology, free_port_base, local_stack
from system.runtime.paths import StackPaths
from system.runtime.state import StackSettings
from system.runtime.topology import DEFAULT_TOPOLOGY_FILE

UPSTREAM = Path(__file__).with_name("upstream.py")
CLIENT_RPS = 20
TEST_TOPIC = "runtime.test"


def write_topology(folder: Path) -> Path:
    command = json.dumps(
        ["{python}", str(UPSTREAM), "--port", "{port}", "--name", "{service}-{replica}"]
    )
    path = folder / "topology.toml"
    path.write_text(
        f"""
port_base = 30000
[gateway]
client_rps = 5
shared_rps = 1000
max_request_bytes = 4096
timeout_s = 5.0
[kafka.topics]
"{TEST_TOPIC}" = 3
[services.alpha]
replicas = 2
command = {command}
health_path = "/health/ready"
[services.beta]
command = {command}
calls = ["alpha"]
"""
    )
    return path


@pytest.fixture(scope="session")
def stack_paths(tmp_path_factory: pytest.TempPathFactory) -> StackPaths:
    home = tmp_path_factory.mktemp("harness-home")
    return StackPaths.for_stack("itest", home)


@pytest.fixture(scope="session")
def stack(
    stack_paths: StackPaths, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """The running stack's state: ``ports``, ``processes`` (pids), ``port_base``."""
    topology_file = write_topology(tmp_path_factory.mktemp("topology"))
    settings = StackSettings(name="itest", topology_file=str(topology_file))
    settings = StackSettings(**{**settings.__dict__, "port_base": free_port_base(settings)})
    with local_stack(stack_paths, settings) as state:
        print(f"stack up at port base {state['port_base']}", file=sys.stderr)
        yield state


@pytest.fixture(scope="session")
def service_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The real system (``system/topology.toml``: users, products x2, payments) on its own
    ports, on SQLite or, with ``HARNESS_DATABASE=postgres``, on PostgreSQL; the state also
    carries ``data_dir`` (for the seeded admin's password) and ``home`` (its
    ``StackPaths.for_stack("services", home)``, for faults)."""
    home = tmp_path_factory.mktemp("services-home")
    paths = StackPaths.for_stack("services", home)
    topology = home / "topology.toml"  # the real one, with a per-client limit a test can hit
    text = (
        DEFAULT_TOPOLOGY_FILE.read_text()
        # a saga step slow enough to interrupt, and a lease short enough to take over
        .replace("[services.orders]\n", '[services.orders]\nenv = { ORDERS_LEASE_S = "2" }\n')
        .replace(
            "[services.payments]\n",
            '[services.payments]\nenv = { PAYMENTS_PROVIDER_LATENCY_MS = "400" }\n',
        )
    )
    topology.write_text(text + f"\n[gateway]\nclient_rps = {CLIENT_RPS}\n")
    database = os.environ.get("HARNESS_DATABASE", "sqlite")  # CI runs the suite on both
    settings = StackSettings(name="services", topology_file=str(topology), database=database)
    settings = StackSettings(**{**settings.__dict__, "port_base": free_port_base(settings)})
    with local_stack(paths, settings) as state:
        yield {**state, "data_dir": str(paths.data), "home": str(home)}


@pytest.fixture(scope="module")
def kafka_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Kafka behind Toxiproxy with the default topology's four event topics, nothing else
    (starts in ~4 s). One per module: a module may count every event on a topic."""
    paths = StackPaths.for_stack("events", tmp_path_factory.mktemp("events-harness-home"))
    topology = events_only_topology(tmp_path_factory.mktemp("events-topology"))
    settings = StackSettings(
        name="events", topology_file=str(topology), without=("envoy", "prometheus", "jaeger")
    )
    settings = StackSettings(**{**settings.__dict__, "port_base": free_port_base(settings)})
    with local_stack(paths, settings) as state:
        yield state


@pytest.fixture
def bootstrap(kafka_stack: dict[str, Any]) -> str:
    return f"127.0.0.1:{kafka_stack['ports']['kafka']}"
