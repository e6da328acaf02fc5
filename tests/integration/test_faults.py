"""Each local fault acts on the real stack, and is really reverted on exit.

The stack is the runtime's small one (``alpha`` x2 and ``beta``, upstreams of
``upstream.py``, behind Envoy; Kafka behind Toxiproxy).
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.faults import Faults
from harness.target import local_target
from system.runtime.paths import StackPaths
from system.runtime.state import read_state
from tests.conftest import poll_until

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.xdist_group("stack")]


@pytest.fixture
def faults(stack: dict[str, Any], stack_paths: StackPaths, tmp_path: Path) -> Iterator[Faults]:
    faults = Faults.for_target(
        local_target(stack_paths, stack), seed=20260101, log_path=tmp_path / "faults.jsonl"
    )
    yield faults
    faults.close()
    assert all(r.reverted for r in faults.records), faults.records


def process(stack_paths: StackPaths, name: str) -> dict[str, Any]:
    state = read_state(stack_paths) or {"processes": []}
    return next(p for p in state["processes"] if p["name"] == name)


def replica_url(stack_paths: StackPaths, name: str, path: str = "/work") -> str:
    return f"http://127.0.0.1:{process(stack_paths, name)['ports']['http']}{path}"


def mesh_url(stack_paths: StackPaths, service: str) -> str:
    return f"http://127.0.0.1:{process(stack_paths, 'envoy')['ports'][f'mesh.{service}']}/work"


def timed_get(url: str, timeout: float = 5.0) -> float:
    began = time.perf_counter()
    httpx.get(url, timeout=timeout).raise_for_status()
    return time.perf_counter() - began


def kafka_api_versions(port: int, timeout: float = 5.0) -> float:
    """Seconds for one Kafka ApiVersions round trip on ``port`` (through Toxiproxy)."""
    request = struct.pack(">hhih", 18, 0, 7, -1)  # api key, version, correlation id, no client
    began = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        header = sock.recv(4, socket.MSG_WAITALL)
        if len(header) < 4:
            raise ConnectionError("the connection closed without an answer")
        body = sock.recv(struct.unpack(">i", header)[0], socket.MSG_WAITALL)
    assert struct.unpack(">i", body[:4]) == (7,), "the broker answers our correlation id"
    return time.perf_counter() - began


def exited(entry: dict[str, Any]) -> bool:
    """The process of ``entry`` no longer runs (exited, or a zombie not yet reaped)."""
    try:
        proc = psutil.Process(entry["pid"])
        return proc.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD) or (
            abs(proc.create_time() - entry["create_time"]) > 0.05
        )
    except psutil.NoSuchProcess:
        return True


def gone(entry: dict[str, Any]) -> bool:
    """Wait (deadline 5 s) until the process of ``entry`` has exited: the kernel ends a
    killed process asynchronously, and its parent reaps it when it gets to it."""
    return bool(poll_until(lambda: exited(entry), f"{entry['name']} to exit", timeout=5.0))


def test_kill_replica_kills_one_and_returns_once_the_supervisor_restarted_it(
    faults: Faults, stack_paths: StackPaths
) -> None:
    before = {n: process(stack_paths, n) for n in ("alpha-1", "alpha-2")}
    with faults.kill_replica("alpha") as record:
        name = f"alpha-{record.params['replica']}"
        old = before[name]
        assert gone(old)
    after = process(stack_paths, name)
    assert after["ready"]
    assert after["pid"] != old["pid"]
    assert after["restarts"] == old["restarts"] + 1
    assert after["last_exit"] == -9
    assert record.seed == 20260101
    assert record.params == {"service": "alpha", "replica": int(name[-1])}


def test_pause_replica_silences_it_and_resumes_it(faults: Faults, stack_paths: StackPaths) -> None:
    url = replica_url(stack_paths, "beta-1")
    pid = process(stack_paths, "beta-1")["pid"]
    with faults.pause_replica("beta", replica=1):
        assert psutil.Process(pid).status() == psutil.STATUS_STOPPED
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(url, timeout=0.5)
    assert timed_get(url) < 1.0
    assert process(stack_paths, "beta-1")["pid"] == pid, "paused, never restarted"


def test_edge_delay_slows_calls_into_one_service_until_reverted(
    faults: Faults, stack_paths: StackPaths
) -> None:
    alpha, beta = mesh_url(stack_paths, "alpha"), mesh_url(stack_paths, "beta")
    baseline = min(timed_get(alpha) for _ in range(3))
    with faults.edge_delay("alpha", delay_ms=400, percent=100):
        delayed = min(timed_get(alpha) for _ in range(2))
        other = min(timed_get(beta) for _ in range(2))
    after = min(timed_get(alpha) for _ in range(3))
    assert delayed - baseline > 0.35, (baseline, delayed)
    assert other < baseline + 0.2, "only the edge into alpha is delayed"
    assert after < baseline + 0.2, (baseline, after)


def test_edge_abort_answers_for_the_service_until_reverted(
    faults: Faults, stack_paths: StackPaths
) -> None:
    alpha = mesh_url(stack_paths, "alpha")
    with faults.edge_abort("alpha", status=503, percent=100):
        statuses = [httpx.get(alpha).status_code for _ in range(3)]
    assert statuses == [503, 503, 503]
    assert httpx.get(alpha).status_code == 200


def test_a_latency_toxic_slows_kafka_until_removed(faults: Faults, stack: dict[str, Any]) -> None:
    port = stack["ports"]["kafka"]
    baseline = min(kafka_api_versions(port) for _ in range(3))
    with faults.tcp_toxic("kafka", "latency", latency=300, jitter=0):
        slowed = min(kafka_api_versions(port) for _ in range(2))
    after = min(kafka_api_versions(port) for _ in range(3))
    assert slowed - baseline > 0.25, (baseline, slowed)
    assert after < baseline + 0.1, (baseline, after)
    toxics = httpx.get(f"http://127.0.0.1:{stack['ports']['toxiproxy']}/proxies/kafka/toxics")
    assert toxics.json() == []


def test_stop_component_keeps_kafka_down_while_the_rest_runs_then_brings_it_back(
    faults: Faults, stack: dict[str, Any], stack_paths: StackPaths
) -> None:
    kafka = process(stack_paths, "kafka")
    services = {n: process(stack_paths, n)["pid"] for n in ("alpha-1", "alpha-2", "beta-1")}
    with faults.stop_component("kafka"):
        assert gone(kafka)
        deadline = time.monotonic() + 3.0  # several restart backoffs: it must stay down
        while time.monotonic() < deadline:
            held = process(stack_paths, "kafka")
            assert (held["phase"], held["pid"], held["held"]) == ("held", None, True)
            time.sleep(0.2)
        with pytest.raises(ConnectionError):
            kafka_api_versions(stack["ports"]["kafka"], timeout=1.0)
        assert {n: process(stack_paths, n)["pid"] for n in services} == services
    back = process(stack_paths, "kafka")
    assert back["ready"]
    assert not back["held"]
    assert back["pid"] != kafka["pid"]
    assert back["restarts"] == kafka["restarts"], "a hold is not a crash"
    assert kafka_api_versions(stack["ports"]["kafka"]) < 1.0
    assert (read_state(stack_paths) or {})["all_ready"]


def test_the_cli_holds_and_releases_a_process(
    stack: dict[str, Any], stack_paths: StackPaths
) -> None:
    env = {"HARNESS_HOME": str(stack_paths.root.parents[1])}
    runner = CliRunner()
    held = runner.invoke(main, ["--stack", stack_paths.root.name, "hold", "alpha-2"], env=env)
    assert held.exit_code == 0, held.output
    assert process(stack_paths, "alpha-2")["phase"] == "held"
    released = runner.invoke(
        main, ["--stack", stack_paths.root.name, "release", "alpha-2"], env=env
    )
    assert released.exit_code == 0, released.output
    poll_until(lambda: process(stack_paths, "alpha-2")["ready"], "alpha-2 ready")
    unknown = runner.invoke(main, ["--stack", stack_paths.root.name, "hold", "zookeeper"], env=env)
    assert unknown.exit_code == 1
    assert "has no process 'zookeeper'" in unknown.output
