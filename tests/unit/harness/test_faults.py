"""Faults with fakes at the two seams: a process table and an httpx mock transport.

What is checked: the registry, records (parameters, seed, times, JSON lines), seeded
choices, revert on every path (and a failed revert never hiding the body's error), and
what each local fault sends to the supervisor, Envoy and Toxiproxy.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.faults import (
    FaultError,
    FaultNotSupported,
    FaultRevertError,
    Faults,
    FaultTimeout,
    catalog,
)
from harness.faults import base as faults_base
from harness.faults.base import Fault, lookup, poll_until, register
from harness.faults.local import Entry, LocalEnv
from harness.target import LocalStack, Target
from system.runtime.paths import StackPaths

KINDS = {
    "kill_replica",
    "pause_replica",
    "restart_replica",
    "edge_delay",
    "edge_abort",
    "tcp_toxic",
    "stop_component",
}


def entry(name: str, pid: int, role: str = "service", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "pid": pid,
        "create_time": 1.0,
        "role": role,
        "ready": True,
        "phase": "running",
        "held": False,
        "restarts": 0,
        "ports": {},
        **extra,
    }


@dataclass
class FakeProcesses:
    """The supervisor, instantly: a killed or stopped process is replaced at once."""

    table: list[dict[str, Any]]
    restarts: bool = True
    """``False``: a killed process never comes back (a supervisor that is not running)."""
    gone: set[str] = field(default_factory=set)
    sent: list[tuple[str, str]] = field(default_factory=list)
    release_error: Exception | None = None

    def processes(self) -> list[dict[str, Any]]:
        return [dict(e) for e in self.table]

    def _row(self, name: str) -> dict[str, Any]:
        return next(e for e in self.table if e["name"] == name)

    def signal(self, entry: Entry, sig: signal.Signals) -> bool:
        if entry["name"] in self.gone:
            return False
        self.sent.append((entry["name"], sig.name))
        row = self._row(entry["name"])
        if sig in (signal.SIGKILL, signal.SIGTERM):
            row.update(ready=False, pid=None, phase="backoff")
            if self.restarts:
                row.update(ready=True, pid=entry["pid"] + 1000, phase="running")
                row["restarts"] += 1
        elif sig == signal.SIGSTOP:
            row["ready"] = False
        elif sig == signal.SIGCONT:
            row["ready"] = True
        return True

    def hold(self, name: str) -> None:
        self.sent.append((name, "hold"))
        self._row(name).update(held=True, phase="held", pid=None, ready=False)

    def release(self, name: str) -> None:
        self.sent.append((name, "release"))
        if self.release_error is not None:
            raise self.release_error
        self._row(name).update(held=False, phase="running", pid=4242, ready=True)


def stack_table() -> list[dict[str, Any]]:
    return [
        entry("toxiproxy", 10, "infrastructure"),
        entry("kafka", 11, "infrastructure"),
        entry(
            "envoy", 12, "infrastructure", ports={"admin": 1, "mesh.orders": 2, "mesh.payments": 3}
        ),
        entry("orders-1", 21),
        entry("orders-2", 22),
        entry("orders-3", 23),
        entry("payments-1", 31),
    ]


@dataclass
class FakeAdmin:
    """Envoy's admin and Toxiproxy's API: records every request, answers like them."""

    requests: list[httpx.Request] = field(default_factory=list)
    proxies: tuple[str, ...] = ("kafka",)
    delete_status: int = 204

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/runtime_modify":
            return httpx.Response(200, text="OK")
        if path == "/proxies":
            return httpx.Response(200, json={name: {"name": name} for name in self.proxies})
        if request.method == "POST" and path.endswith("/toxics"):
            return httpx.Response(200, json=json.loads(request.content))
        if request.method == "DELETE":
            return httpx.Response(self.delete_status)
        return httpx.Response(404)

    def calls(self) -> list[tuple[str, str, dict[str, str]]]:
        return [(r.method, r.url.path, dict(r.url.params)) for r in self.requests]


@dataclass
class Rig:
    procs: FakeProcesses
    admin: FakeAdmin
    faults: Faults


@pytest.fixture
def make_rig(tmp_path: Path) -> Callable[..., Rig]:
    def make(seed: int = 1234, timeout: float = 0.3, **fake: Any) -> Rig:
        procs = FakeProcesses(stack_table(), **fake)
        admin = FakeAdmin()
        env = LocalEnv(
            procs=procs,
            http=httpx.Client(transport=httpx.MockTransport(admin)),
            envoy_admin="http://envoy",
            toxiproxy="http://toxiproxy",
            timeout=timeout,
            interval=0.01,
        )
        faults = Faults("local", env, seed=seed, log_path=tmp_path / "faults.jsonl")
        return Rig(procs, admin, faults)

    return make


@pytest.fixture
def rig(make_rig: Callable[..., Rig]) -> Rig:
    return make_rig()


# -- the registry ------------------------------------------------------------------------
def test_every_kind_has_a_local_and_a_kubernetes_implementation() -> None:
    assert catalog() == {kind: ["local", "kubernetes"] for kind in sorted(KINDS)}


def test_an_unknown_kind_names_the_known_ones(rig: Rig) -> None:
    with pytest.raises(FaultError, match="no fault kind 'melt_cpu'; known: edge_abort"):
        lookup("local", "melt_cpu")
    with pytest.raises(FaultError, match="melt_cpu"), rig.faults.inject("melt_cpu"):
        pass


def test_a_kind_missing_from_one_flavour_is_not_supported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(faults_base._REGISTRY, "kubernetes", {})
    with pytest.raises(FaultNotSupported, match=r"kill_replica' has no kubernetes .*only local"):
        lookup("kubernetes", "kill_replica")


def test_a_kind_cannot_be_registered_twice() -> None:
    with pytest.raises(ValueError, match="registered twice"):

        @register("local")
        class Again(Fault[LocalEnv]):
            kind = "kill_replica"


# -- records and seeds -------------------------------------------------------------------
def test_a_record_keeps_the_resolved_parameters_the_seed_and_the_times(rig: Rig) -> None:
    with rig.faults.kill_replica("orders") as record:
        assert record.ended_at is None
        assert not record.reverted
    assert rig.faults.records == [record]
    assert record.kind == "kill_replica"
    assert record.flavour == "local"
    assert record.seed == 1234
    assert record.params["service"] == "orders"
    assert record.params["replica"] in (1, 2, 3), "the seeded choice, not None"
    assert record.target == f"orders-{record.params['replica']}"
    assert record.reverted
    assert record.error is None
    assert record.ended_at is not None
    assert record.ended_at >= record.started_at
    assert rig.faults.log_path is not None
    logged = [json.loads(line) for line in rig.faults.log_path.read_text().splitlines()]
    assert logged == [json.loads(record.to_json())]
    assert logged[0]["params"]["replica"] == record.params["replica"]


def test_the_same_seed_makes_the_same_choices(make_rig: Callable[..., Rig]) -> None:
    def choices(seed: int) -> list[Any]:
        faults = make_rig(seed=seed).faults
        for _ in range(6):
            with faults.kill_replica("orders"):
                pass
        return [r.params["replica"] for r in faults.records]

    assert choices(7) == choices(7)
    assert len({tuple(choices(seed)) for seed in range(6)}) > 1, "the seed matters"


def test_without_a_seed_one_is_drawn_and_recorded(rig: Rig) -> None:
    faults = Faults("local", rig.faults.env)
    with faults.edge_abort("orders"):
        pass
    assert isinstance(faults.seed, int)
    assert faults.records[0].seed == faults.seed


# -- revert on every path ----------------------------------------------------------------
def test_a_body_that_raises_still_reverts_and_keeps_its_error(rig: Rig) -> None:
    with (
        pytest.raises(ValueError, match="scenario failed"),
        rig.faults.pause_replica("orders", replica=2),
    ):
        raise ValueError("scenario failed")
    assert rig.procs.sent == [("orders-2", "SIGSTOP"), ("orders-2", "SIGCONT")]
    record = rig.faults.records[0]
    assert record.reverted
    assert record.error == "ValueError: scenario failed"


def test_a_failed_revert_does_not_hide_the_bodys_error(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(release_error=FaultError("stack 'itest' is not running"))
    with (
        pytest.raises(ValueError, match="scenario failed") as raised,
        rig.faults.stop_component("kafka"),
    ):
        raise ValueError("scenario failed")
    assert any("reverting stop_component on kafka failed" in n for n in raised.value.__notes__)
    record = rig.faults.records[0]
    assert not record.reverted
    assert record.error is not None
    assert "scenario failed" in record.error
    assert "not running" in record.error


def test_a_failed_revert_after_a_clean_body_raises(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(release_error=FaultError("stack gone"))
    with (
        pytest.raises(FaultRevertError, match="reverting stop_component on kafka failed"),
        rig.faults.stop_component("kafka"),
    ):
        pass
    assert rig.faults.records[0].reverted is False


def test_a_fault_that_cannot_apply_reverts_nothing_and_says_why(rig: Rig) -> None:
    rig.procs.gone.add("orders-3")
    with (
        pytest.raises(FaultError, match="cannot send SIGKILL to orders-3: it is not running"),
        rig.faults.kill_replica("orders", replica=3),
    ):
        pytest.fail("the body must not run")
    record = rig.faults.records[0]
    assert record.reverted
    assert record.error is not None
    assert "SIGKILL" in record.error


def test_a_paused_replica_that_vanished_needs_no_sigcont(rig: Rig) -> None:
    with rig.faults.pause_replica("payments", replica=1):
        rig.procs.gone.add("payments-1")
        rig.procs.table[-1]["ready"] = True  # the supervisor replaced it meanwhile
    assert rig.faults.records[0].reverted
    assert rig.procs.sent == [("payments-1", "SIGSTOP")]


def test_a_wait_that_times_out_names_what_never_happened() -> None:
    with pytest.raises(FaultTimeout, match=r"after 0\.05s waiting until kafka is ready"):
        poll_until(lambda: None, "kafka is ready", timeout=0.05, interval=0.01)
    assert poll_until(lambda: "yes", "anything", timeout=0) == "yes"


# -- what each local fault does ----------------------------------------------------------
def test_kill_waits_for_the_supervisor_and_names_what_never_happened(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(restarts=False)
    with (
        pytest.raises(FaultRevertError, match=r"orders-1 is restarted by the supervisor \(pid 21"),
        rig.faults.kill_replica("orders", replica=1),
    ):
        pass
    assert "FaultTimeout: timed out after 0.3s" in str(rig.faults.records[0].error)
    assert rig.procs.sent == [("orders-1", "SIGKILL")]


async def test_async_with_keeps_the_event_loop_running_while_the_revert_waits(
    make_rig: Callable[..., Rig],
) -> None:
    """The replica comes back only through a coroutine of the caller's loop (as a
    scenario's traffic keeps going meanwhile): a revert that blocked the loop would time
    out; ``async with`` runs it in a worker thread."""
    rig = make_rig(restarts=False, timeout=5.0)
    ticks = 0

    async def supervisor() -> None:
        nonlocal ticks
        while ticks < 20:  # ~0.1 s of the loop running after the revert began
            await asyncio.sleep(0.005)
            ticks += 1
        rig.procs.table[3].update(ready=True, pid=1021, phase="running")

    async with rig.faults.kill_replica("orders", replica=1) as record:
        assert rig.procs.table[3]["pid"] is None, "applied on entry"
        restarting = asyncio.create_task(supervisor())
    await restarting
    assert record.reverted
    assert ticks == 20
    assert rig.procs.sent == [("orders-1", "SIGKILL")]


def test_restart_is_a_plain_call_that_returns_once_ready(rig: Rig) -> None:
    record = rig.faults.restart_replica("orders", 2)
    assert rig.procs.sent == [("orders-2", "SIGTERM")]
    assert record.reverted
    assert record.target == "orders-2"
    assert rig.procs.table[4]["ready"]
    assert rig.procs.table[4]["pid"] == 1022


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda f: f.kill_replica("billing"), "no service 'billing' in this stack; services: "),
        (lambda f: f.pause_replica("orders", 4), r"orders has replicas \[1, 2, 3\], not 4"),
        (lambda f: f.stop_component("zookeeper"), "no process 'zookeeper' in this stack"),
        (lambda f: f.edge_delay("users", delay_ms=5), "no mesh edge into 'users'; edges: orders"),
        (lambda f: f.edge_abort("orders", percent=150), "percent must be within 0-100"),
        (lambda f: f.tcp_toxic("postgres", "latency"), "no Toxiproxy proxy 'postgres': kafka"),
        (lambda f: f.tcp_toxic("kafka", "lag"), "toxic type 'lag' is not one of"),
    ],
)
def test_bad_targets_and_parameters_get_one_clear_line(
    rig: Rig, call: Callable[[Faults], Any], message: str
) -> None:
    with pytest.raises(FaultError, match=message), call(rig.faults):
        pytest.fail("the body must not run")


def test_edge_delay_sets_the_edges_runtime_keys_and_clears_them(rig: Rig) -> None:
    with rig.faults.edge_delay("payments", delay_ms=3000, percent=100):
        assert rig.admin.calls() == [
            (
                "POST",
                "/runtime_modify",
                {"mesh.payments.delay.percent": "100", "mesh.payments.delay.duration_ms": "3000"},
            )
        ]
    assert rig.admin.calls()[-1] == (
        "POST",
        "/runtime_modify",
        {"mesh.payments.delay.percent": "", "mesh.payments.delay.duration_ms": ""},
    )


def test_edge_abort_sets_status_and_percent(rig: Rig) -> None:
    with rig.faults.edge_abort("payments", status=503, percent=50) as record:
        pass
    assert rig.admin.calls()[0][2] == {
        "mesh.payments.abort.percent": "50",
        "mesh.payments.abort.http_status": "503",
    }
    assert record.params == {"service": "payments", "status": 503, "percent": 50}


def test_a_toxic_is_added_and_removed_even_if_toxiproxy_lost_it(rig: Rig) -> None:
    rig.admin.delete_status = 404  # e.g. Toxiproxy restarted meanwhile
    with rig.faults.tcp_toxic("kafka", "latency", latency=500, jitter=0) as record:
        posted = json.loads(rig.admin.requests[1].content)
    name = posted.pop("name")
    assert posted == {
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1.0,
        "attributes": {"latency": 500, "jitter": 0},
    }
    assert rig.admin.calls()[-1][:2] == ("DELETE", f"/proxies/kafka/toxics/{name}")
    assert record.reverted
    assert record.params["attributes"] == {"latency": 500, "jitter": 0}


def test_an_unreachable_api_is_a_fault_error(rig: Rig) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    rig.faults.env.http = httpx.Client(transport=httpx.MockTransport(refuse))
    with (
        pytest.raises(
            FaultError, match="set Envoy runtime: http://envoy/runtime_modify is unreachable"
        ),
        rig.faults.edge_delay("orders", delay_ms=10),
    ):
        pass


def test_stop_component_holds_it_and_releases_it(rig: Rig) -> None:
    with rig.faults.stop_component("kafka"):
        kafka = rig.procs.table[1]
        assert (kafka["phase"], kafka["pid"]) == ("held", None)
    assert rig.procs.sent == [("kafka", "hold"), ("kafka", "release")]
    assert rig.procs.table[1]["ready"]
    assert not rig.procs.table[1]["held"]


# -- choosing the flavour ----------------------------------------------------------------
def target(**extra: Any) -> Target:
    return Target("t", "http://gw", "http://prom", "http://jaeger", **extra)


def test_for_target_picks_the_flavour(tmp_path: Path) -> None:
    state = {"ports": {"envoy_admin": 40001, "toxiproxy": 40009}}
    local = Faults.for_target(target(local=LocalStack(StackPaths(tmp_path), state)), seed=1)
    assert local.flavour == "local"
    assert local.env.envoy_admin == "http://127.0.0.1:40001"
    local.close()
    kube = Faults.for_target(target(kube_context="kind-mh"), seed=1)
    assert kube.flavour == "kubernetes"
    assert kube.env.context == "kind-mh"
    with pytest.raises(FaultNotSupported, match="HARNESS_KUBE_CONTEXT"):
        Faults.for_target(target())
