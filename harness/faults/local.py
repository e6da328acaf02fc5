"""What the local faults act through: the supervisor's processes, Envoy's admin API and
Toxiproxy's API. Two seams, so unit tests run without a stack: :class:`ProcessControl`
(pids, signals, holds) and the ``httpx.Client`` (give it a mock transport)."""

from __future__ import annotations

import contextlib
import re
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import count
from typing import Any, Protocol

import httpx
import psutil

from harness.faults.base import FaultError, poll_until
from harness.target import LocalStack
from system.runtime import control

Entry = Mapping[str, Any]
"""One process of ``state.json``: name, pid, create_time, ready, phase, held, restarts …"""


class ProcessControl(Protocol):
    def processes(self) -> list[dict[str, Any]]:
        """The supervisor's current view of every process (re-read on every call)."""
        ...

    def signal(self, entry: Entry, sig: signal.Signals) -> bool:
        """Send ``sig`` to the process of ``entry``; ``False`` if it is gone (or its pid
        now belongs to another process)."""
        ...

    def hold(self, name: str) -> None: ...

    def release(self, name: str) -> None: ...


_TAKES_EFFECT = {
    signal.SIGSTOP: (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE, "gone"),
    signal.SIGKILL: (psutil.STATUS_DEAD, psutil.STATUS_ZOMBIE, "gone"),
}


def _status(proc: psutil.Process) -> str:
    try:
        return str(proc.status())
    except psutil.NoSuchProcess:
        return "gone"


@dataclass(frozen=True)
class StackProcesses:
    """:class:`ProcessControl` of a running local stack."""

    stack: LocalStack

    def processes(self) -> list[dict[str, Any]]:
        return self.stack.processes()

    def signal(self, entry: Entry, sig: signal.Signals) -> bool:
        pid, create_time = entry.get("pid"), entry.get("create_time")
        if pid is None:
            return False
        try:
            proc = psutil.Process(pid)
            if create_time is not None and abs(proc.create_time() - create_time) > 0.05:
                return False
            proc.send_signal(sig)
            if sig in _TAKES_EFFECT:  # delivered asynchronously: return once it took effect
                poll_until(
                    lambda: _status(proc) in _TAKES_EFFECT[sig],
                    f"{entry['name']} is {_TAKES_EFFECT[sig][0]} by {sig.name}",
                    timeout=5.0,
                    interval=0.01,
                )
        except psutil.Error:
            return False
        return True

    def hold(self, name: str) -> None:
        try:
            control.hold(self.stack.paths, name)
        except control.StackError as exc:
            raise FaultError(str(exc)) from exc

    def release(self, name: str) -> None:
        try:
            control.release(self.stack.paths, name)
        except control.StackError as exc:
            raise FaultError(str(exc)) from exc


@dataclass
class LocalEnv:
    """Everything a local fault needs, with the deadline of its waits."""

    procs: ProcessControl
    http: httpx.Client
    envoy_admin: str
    """Envoy's admin root, e.g. ``http://127.0.0.1:40001``."""
    toxiproxy: str
    """Toxiproxy's API root."""
    timeout: float = 90.0
    interval: float = 0.1
    _names: count[int] = field(default_factory=lambda: count(1))

    # -- processes -----------------------------------------------------------------------
    def entry(self, name: str) -> dict[str, Any] | None:
        return next((p for p in self.procs.processes() if p["name"] == name), None)

    def replicas(self, service: str) -> dict[int, dict[str, Any]]:
        """The replicas of ``service`` by number (process ``products-2`` is replica 2)."""
        pattern = re.compile(rf"^{re.escape(service)}-(\d+)$")
        found = {}
        for entry in self.procs.processes():
            match = pattern.match(entry["name"])
            if match and entry.get("role", "service") == "service":
                found[int(match.group(1))] = entry
        if not found:
            services = sorted(
                {
                    p["name"].rsplit("-", 1)[0]
                    for p in self.procs.processes()
                    if p["role"] == "service"
                }
            )
            raise FaultError(
                f"no service {service!r} in this stack; services: {', '.join(services)}"
            )
        return dict(sorted(found.items()))

    def wait(
        self, name: str, condition: Callable[[dict[str, Any]], bool], description: str
    ) -> dict[str, Any]:
        """Poll the process list until ``name``'s entry meets ``condition`` (deadline)."""

        def check() -> dict[str, Any] | None:
            entry = self.entry(name)
            return entry if entry is not None and condition(entry) else None

        return poll_until(
            check, f"{name} {description}", timeout=self.timeout, interval=self.interval
        )

    def wait_replaced(self, old: Entry) -> dict[str, Any]:
        """Wait until the supervisor runs a new process for ``old`` and it is ready."""
        return self.wait(
            old["name"],
            lambda e: e["ready"] and e["pid"] not in (None, old["pid"]),
            f"is restarted by the supervisor (pid {old['pid']} replaced) and ready",
        )

    # -- HTTP ----------------------------------------------------------------------------
    def request(
        self, method: str, url: str, what: str, *, missing_ok: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """One admin call; a refusal or an unreachable API is a :class:`FaultError`
        (a 404 too, unless ``missing_ok``: removing what is already gone)."""
        try:
            response = self.http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise FaultError(f"{what}: {url} is unreachable ({type(exc).__name__})") from exc
        if response.is_error and not (missing_ok and response.status_code == 404):
            raise FaultError(f"{what}: {url} answered {response.status_code} {response.text[:200]}")
        return response

    def set_runtime(self, values: Mapping[str, str]) -> None:
        """Envoy runtime overrides (an empty value removes the override)."""
        self.request(
            "POST", f"{self.envoy_admin}/runtime_modify", "set Envoy runtime", params=dict(values)
        )

    def toxic_name(self, kind: str) -> str:
        return f"harness_{kind}_{next(self._names)}"

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.http.close()


def local_env(stack: LocalStack, *, http: httpx.Client | None = None, timeout: float) -> LocalEnv:
    ports = stack.ports
    return LocalEnv(
        procs=StackProcesses(stack),
        http=http or httpx.Client(timeout=10.0, trust_env=False),
        envoy_admin=f"http://127.0.0.1:{ports['envoy_admin']}",
        toxiproxy=f"http://127.0.0.1:{ports['toxiproxy']}",
        timeout=timeout,
    )
