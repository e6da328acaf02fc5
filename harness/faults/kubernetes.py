"""The same faults on Kubernetes, delegated to Chaos Toolkit extensions (kept thin).

| fault | delegated to |
|---|---|
| kill / restart replica | ``chaosk8s.pod.actions.terminate_pods`` (grace 0 / the pod's own) |
| pause replica | ``chaosk8s.pod.actions.exec_in_pods``: ``kill -STOP 1`` / ``kill -CONT 1`` |
| edge delay / abort | ``chaosistio.fault.actions`` (Istio VirtualService fault), if installed |
| TCP latency | ``chaosk8s.chaosmesh.network.actions.add_latency`` (needs Chaos Mesh) |
| stop component | ``chaosk8s.statefulset.actions.scale_statefulset`` to 0 and back |

Pods are selected by the label ``<label>=<service>`` (``app`` by default); replica N is the
N-th pod name in alphabetical order. The extensions are imported when a fault runs, so
the local flavour never pays for the Kubernetes client.
"""

from __future__ import annotations

import importlib
import random
import re
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, ClassVar

from harness.faults.base import Fault, FaultError, FaultNotSupported, FaultTimeout, register

ISTIO_HINT = (
    "edge faults on Kubernetes are Istio VirtualService faults: install chaostoolkit-istio "
    "and run the services behind Istio (one VirtualService per service)"
)


def extension(module: str, hint: str | None = None) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise FaultNotSupported(hint or f"{module} is not installed") from exc


@dataclass
class KubeEnv:
    context: str
    namespace: str = "default"
    label: str = "app"
    timeout: float = 120.0

    @property
    def secrets(self) -> dict[str, Any]:
        return {"KUBERNETES_CONTEXT": self.context}

    def selector(self, name: str) -> str:
        return f"{self.label}={name}"

    def pods(self, service: str) -> list[str]:
        """Names of the pods of ``service``, sorted."""
        chaosk8s = extension("chaosk8s")
        core = importlib.import_module("kubernetes.client").CoreV1Api(
            chaosk8s.create_k8s_api_client(self.secrets)
        )
        listed = core.list_namespaced_pod(self.namespace, label_selector=self.selector(service))
        return sorted(p.metadata.name for p in listed.items)

    def pick(self, service: str, replica: int | None, rng: random.Random) -> tuple[int, str]:
        pods = self.pods(service)
        if not pods:
            raise FaultError(f"no pod labelled {self.selector(service)} in {self.namespace}")
        if replica is None:
            replica = rng.randint(1, len(pods))
        if not 1 <= replica <= len(pods):
            raise FaultError(f"{service} has {len(pods)} pods, no replica {replica}")
        return replica, pods[replica - 1]

    def wait_available(self, deployment: str) -> None:
        probes = extension("chaosk8s.deployment.probes")
        try:
            probes.deployment_fully_available(
                name=deployment,
                ns=self.namespace,
                timeout=int(self.timeout),
                secrets=self.secrets,
            )
        except Exception as exc:  # chaoslib's ActivityFailed
            raise FaultTimeout(f"deployment {deployment} not fully available: {exc}") from exc


def only(pod: str) -> str:
    return f"^{re.escape(pod)}$"


@dataclass
class _PodFault(Fault[KubeEnv]):
    service: str
    replica: int | None = None
    _pod: str | None = field(default=None, init=False, repr=False)

    def target(self) -> str:
        return self._pod or f"{self.service}/?"


@register("kubernetes")
@dataclass
class KillPod(_PodFault):
    kind: ClassVar[str] = "kill_replica"
    grace_period: ClassVar[int] = 0

    def apply(self, env: KubeEnv, rng: random.Random) -> None:
        self.replica, pod = env.pick(self.service, self.replica, rng)
        extension("chaosk8s.pod.actions").terminate_pods(
            label_selector=env.selector(self.service),
            name_pattern=only(pod),
            grace_period=self.grace_period,
            ns=env.namespace,
            secrets=env.secrets,
        )
        self._pod = pod

    def revert(self, env: KubeEnv) -> None:
        if self._pod is not None:
            env.wait_available(self.service)


@register("kubernetes")
@dataclass
class RestartPod(KillPod):
    kind: ClassVar[str] = "restart_replica"
    grace_period: ClassVar[int] = -1  # the pod's own terminationGracePeriodSeconds


@register("kubernetes")
@dataclass
class PausePod(_PodFault):
    kind: ClassVar[str] = "pause_replica"

    def _signal(self, env: KubeEnv, pod: str, sig: str) -> None:
        extension("chaosk8s.pod.actions").exec_in_pods(
            cmd=f"kill -{sig} 1",
            label_selector=env.selector(self.service),
            name_pattern=only(pod),
            ns=env.namespace,
            secrets=env.secrets,
        )

    def apply(self, env: KubeEnv, rng: random.Random) -> None:
        self.replica, pod = env.pick(self.service, self.replica, rng)
        self._signal(env, pod, "STOP")
        self._pod = pod

    def revert(self, env: KubeEnv) -> None:
        if self._pod is not None:
            self._signal(env, self._pod, "CONT")
            env.wait_available(self.service)


@dataclass
class _IstioFault(Fault[KubeEnv]):
    service: str
    percent: float = 100
    _applied: bool = field(default=False, init=False, repr=False)

    def target(self) -> str:
        return f"virtualservice {self.service}"

    def routes(self) -> list[dict[str, Any]]:
        return [{"destination": {"host": self.service}}]

    def add(self, istio: ModuleType, env: KubeEnv) -> None:
        raise NotImplementedError

    def remove(self, istio: ModuleType, env: KubeEnv) -> None:
        raise NotImplementedError

    def apply(self, env: KubeEnv, rng: random.Random) -> None:
        self.add(extension("chaosistio.fault.actions", ISTIO_HINT), env)
        self._applied = True

    def revert(self, env: KubeEnv) -> None:
        if self._applied:
            self.remove(extension("chaosistio.fault.actions", ISTIO_HINT), env)


@register("kubernetes")
@dataclass
class IstioDelay(_IstioFault):
    kind: ClassVar[str] = "edge_delay"
    delay_ms: int = 1000

    def add(self, istio: ModuleType, env: KubeEnv) -> None:
        istio.add_delay_fault(
            virtual_service_name=self.service,
            fixed_delay=f"{self.delay_ms}ms",
            routes=self.routes(),
            percentage=float(self.percent),
            ns=env.namespace,
            secrets=env.secrets,
        )

    def remove(self, istio: ModuleType, env: KubeEnv) -> None:
        istio.remove_delay_fault(
            virtual_service_name=self.service,
            routes=self.routes(),
            ns=env.namespace,
            secrets=env.secrets,
        )


@register("kubernetes")
@dataclass
class IstioAbort(_IstioFault):
    kind: ClassVar[str] = "edge_abort"
    status: int = 503

    def add(self, istio: ModuleType, env: KubeEnv) -> None:
        istio.add_abort_fault(
            virtual_service_name=self.service,
            http_status=self.status,
            routes=self.routes(),
            percentage=float(self.percent),
            ns=env.namespace,
            secrets=env.secrets,
        )

    def remove(self, istio: ModuleType, env: KubeEnv) -> None:
        istio.remove_abort_fault(
            virtual_service_name=self.service,
            routes=self.routes(),
            ns=env.namespace,
            secrets=env.secrets,
        )


@register("kubernetes")
@dataclass
class ChaosMeshLatency(Fault[KubeEnv]):
    """Only the ``latency`` toxic has a Kubernetes counterpart (a Chaos Mesh NetworkChaos on
    the component's pods); the other toxic types raise :class:`FaultNotSupported`."""

    kind: ClassVar[str] = "tcp_toxic"
    proxy: str
    type: str
    stream: str = "downstream"
    toxicity: float = 1.0
    attributes: dict[str, Any] = field(default_factory=dict)
    _name: str | None = field(default=None, init=False, repr=False)

    def target(self) -> str:
        return f"networkchaos on {self.proxy}"

    def apply(self, env: KubeEnv, rng: random.Random) -> None:
        if self.type != "latency":
            raise FaultNotSupported(
                f"toxic {self.type!r} has no Kubernetes implementation (only latency, via "
                "Chaos Mesh)"
            )
        name = f"harness-latency-{self.proxy}-{rng.getrandbits(24):06x}"
        extension("chaosk8s.chaosmesh.network.actions").add_latency(
            name=name,
            ns=env.namespace,
            label_selectors=env.selector(self.proxy),
            latency=f"{self.attributes.get('latency', 0)}ms",
            jitter=f"{self.attributes.get('jitter', 0)}ms",
            secrets=env.secrets,
        )
        self._name = name

    def revert(self, env: KubeEnv) -> None:
        if self._name is not None:
            extension("chaosk8s.chaosmesh.network.actions").delete_network_fault(
                name=self._name, ns=env.namespace, secrets=env.secrets
            )


@register("kubernetes")
@dataclass
class ScaleToZero(Fault[KubeEnv]):
    """Scale a StatefulSet (``kafka``, ``postgres``) to 0; back to ``replicas`` on revert."""

    kind: ClassVar[str] = "stop_component"
    component: str
    replicas: int = 1
    _scaled: bool = field(default=False, init=False, repr=False)

    def target(self) -> str:
        return f"statefulset {self.component}"

    def _scale(self, env: KubeEnv, replicas: int) -> None:
        extension("chaosk8s.statefulset.actions").scale_statefulset(
            name=self.component, replicas=replicas, ns=env.namespace, secrets=env.secrets
        )

    def apply(self, env: KubeEnv, rng: random.Random) -> None:
        self._scale(env, 0)
        self._scaled = True

    def revert(self, env: KubeEnv) -> None:
        if not self._scaled:
            return
        self._scale(env, self.replicas)
        probes = extension("chaosk8s.statefulset.probes")
        try:
            probes.statefulset_fully_available(
                name=self.component,
                ns=env.namespace,
                timeout=int(env.timeout),
                secrets=env.secrets,
            )
        except Exception as exc:  # chaoslib's ActivityFailed
            raise FaultTimeout(f"statefulset {self.component} not available: {exc}") from exc
