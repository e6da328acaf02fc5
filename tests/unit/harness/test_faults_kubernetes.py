"""The Kubernetes flavour: the arguments it hands to the Chaos Toolkit extensions (no
cluster here: each extension function is replaced by a recorder)."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import pytest

from harness.faults import FaultNotSupported, Faults
from harness.faults.kubernetes import KubeEnv

SECRETS = {"KUBERNETES_CONTEXT": "kind-mh"}
PODS = ["orders-7d9-abc", "orders-7d9-def", "orders-7d9-xyz"]


class Calls:
    def __init__(self) -> None:
        self.made: list[tuple[str, dict[str, Any]]] = []

    def recorder(self, name: str, result: Any = None) -> Any:
        def record(**kwargs: Any) -> Any:
            self.made.append((name, kwargs))
            return result

        return record


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    calls = Calls()
    monkeypatch.setattr(KubeEnv, "pods", lambda self, service: PODS)
    for module, names in {
        "chaosk8s.pod.actions": ("terminate_pods", "exec_in_pods"),
        "chaosk8s.deployment.probes": ("deployment_fully_available",),
        "chaosk8s.statefulset.actions": ("scale_statefulset",),
        "chaosk8s.statefulset.probes": ("statefulset_fully_available",),
        "chaosk8s.chaosmesh.network.actions": ("add_latency", "delete_network_fault"),
    }.items():
        for name in names:
            monkeypatch.setattr(importlib.import_module(module), name, calls.recorder(name, True))
    return calls


@pytest.fixture
def faults() -> Faults:
    return Faults("kubernetes", KubeEnv("kind-mh", "shop", timeout=30), seed=3)


def test_kill_terminates_exactly_the_chosen_pod_then_waits_for_the_deployment(
    calls: Calls, faults: Faults
) -> None:
    with faults.kill_replica("orders", replica=2) as record:
        pass
    assert calls.made == [
        (
            "terminate_pods",
            {
                "label_selector": "app=orders",
                "name_pattern": "^orders\\-7d9\\-def$",
                "grace_period": 0,
                "ns": "shop",
                "secrets": SECRETS,
            },
        ),
        (
            "deployment_fully_available",
            {"name": "orders", "ns": "shop", "timeout": 30, "secrets": SECRETS},
        ),
    ]
    assert record.target == "orders-7d9-def"
    assert record.reverted


def test_restart_uses_the_pods_own_grace_and_a_seeded_choice(calls: Calls, faults: Faults) -> None:
    record = faults.restart_replica("orders")
    assert calls.made[0][1]["grace_period"] == -1
    assert record.params["replica"] in (1, 2, 3)
    assert record.target == PODS[record.params["replica"] - 1]


def test_pause_stops_and_continues_pid_1(calls: Calls, faults: Faults) -> None:
    with pytest.raises(RuntimeError, match="boom"), faults.pause_replica("orders", 1):
        raise RuntimeError("boom")
    assert [(n, kw["cmd"], kw["name_pattern"]) for n, kw in calls.made[:2]] == [
        ("exec_in_pods", "kill -STOP 1", "^orders\\-7d9\\-abc$"),
        ("exec_in_pods", "kill -CONT 1", "^orders\\-7d9\\-abc$"),
    ]
    assert faults.records[0].reverted


def test_stop_component_scales_the_statefulset_to_zero_and_back(
    calls: Calls, faults: Faults
) -> None:
    with faults.stop_component("kafka"):
        assert calls.made == [
            (
                "scale_statefulset",
                {"name": "kafka", "replicas": 0, "ns": "shop", "secrets": SECRETS},
            )
        ]
    assert calls.made[1] == (
        "scale_statefulset",
        {"name": "kafka", "replicas": 1, "ns": "shop", "secrets": SECRETS},
    )
    assert calls.made[2][0] == "statefulset_fully_available"


def test_a_latency_toxic_becomes_a_chaos_mesh_network_delay(calls: Calls, faults: Faults) -> None:
    with faults.tcp_toxic("kafka", "latency", latency=500, jitter=20):
        name, kwargs = calls.made[0]
    assert name == "add_latency"
    assert kwargs["label_selectors"] == "app=kafka"
    assert (kwargs["latency"], kwargs["jitter"]) == ("500ms", "20ms")
    assert calls.made[1] == (
        "delete_network_fault",
        {"name": kwargs["name"], "ns": "shop", "secrets": SECRETS},
    )


def test_other_toxics_are_not_supported_on_kubernetes(calls: Calls, faults: Faults) -> None:
    with (
        pytest.raises(FaultNotSupported, match="toxic 'timeout' has no Kubernetes"),
        faults.tcp_toxic("postgres", "timeout", timeout=0),
    ):
        pass
    assert calls.made == []


def test_edge_faults_without_chaostoolkit_istio_say_what_to_install(
    calls: Calls, faults: Faults, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "chaosistio", None)  # import fails even if installed
    monkeypatch.setitem(sys.modules, "chaosistio.fault.actions", None)
    with (
        pytest.raises(FaultNotSupported, match="install chaostoolkit-istio"),
        faults.edge_delay("payments", delay_ms=3000),
    ):
        pass
    assert faults.records[0].reverted, "nothing was applied, so nothing to revert"


def test_edge_faults_patch_the_virtual_service_with_chaostoolkit_istio(
    calls: Calls, faults: Faults, monkeypatch: pytest.MonkeyPatch
) -> None:
    istio = type(sys)("chaosistio.fault.actions")
    for name in ("add_delay_fault", "remove_delay_fault", "add_abort_fault", "remove_abort_fault"):
        setattr(istio, name, calls.recorder(name))
    monkeypatch.setitem(sys.modules, "chaosistio.fault.actions", istio)
    with faults.edge_abort("payments", status=503, percent=50):
        pass
    routes = [{"destination": {"host": "payments"}}]
    assert calls.made == [
        (
            "add_abort_fault",
            {
                "virtual_service_name": "payments",
                "http_status": 503,
                "routes": routes,
                "percentage": 50.0,
                "ns": "shop",
                "secrets": SECRETS,
            },
        ),
        (
            "remove_abort_fault",
            {
                "virtual_service_name": "payments",
                "routes": routes,
                "ns": "shop",
                "secrets": SECRETS,
            },
        ),
    ]
