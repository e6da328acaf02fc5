"""Local process faults: kill, pause or restart one replica; stop a component and keep it down.

Replicas are numbered as their processes are named: ``products-2`` is replica 2 of
``products``. ``replica=None`` lets the seeded RNG choose, and the record shows the choice.
"""

from __future__ import annotations

import random
import signal
from dataclasses import dataclass, field
from typing import Any, ClassVar

from harness.faults.base import Fault, FaultError, register
from harness.faults.local import Entry, LocalEnv


def pick_replica(
    env: LocalEnv, service: str, replica: int | None, rng: random.Random
) -> tuple[int, dict[str, Any]]:
    replicas = env.replicas(service)
    if replica is None:
        replica = rng.choice(list(replicas))
    if replica not in replicas:
        raise FaultError(f"{service} has replicas {sorted(replicas)}, not {replica}")
    return replica, replicas[replica]


def send(env: LocalEnv, entry: Entry, sig: signal.Signals) -> None:
    if not env.procs.signal(entry, sig):
        raise FaultError(
            f"cannot send {sig.name} to {entry['name']}: it is not running "
            f"(phase {entry.get('phase')}, pid {entry.get('pid')})"
        )


@register("local")
@dataclass
class KillReplica(Fault[LocalEnv]):
    """SIGKILL one replica; the revert waits until the supervisor restarted it and it is ready."""

    kind: ClassVar[str] = "kill_replica"
    service: str
    replica: int | None = None
    _killed: Entry | None = field(default=None, init=False, repr=False)

    def target(self) -> str:
        return f"{self.service}-{self.replica or '?'}"

    def apply(self, env: LocalEnv, rng: random.Random) -> None:
        self.replica, entry = pick_replica(env, self.service, self.replica, rng)
        send(env, entry, signal.SIGKILL)
        self._killed = entry

    def revert(self, env: LocalEnv) -> None:
        if self._killed is not None:
            env.wait_replaced(self._killed)


@register("local")
@dataclass
class RestartReplica(Fault[LocalEnv]):
    """SIGTERM one replica (a graceful drain); the revert waits until it is back and ready."""

    kind: ClassVar[str] = "restart_replica"
    service: str
    replica: int | None = None
    _stopped: Entry | None = field(default=None, init=False, repr=False)

    def target(self) -> str:
        return f"{self.service}-{self.replica or '?'}"

    def apply(self, env: LocalEnv, rng: random.Random) -> None:
        self.replica, entry = pick_replica(env, self.service, self.replica, rng)
        send(env, entry, signal.SIGTERM)
        self._stopped = entry

    def revert(self, env: LocalEnv) -> None:
        if self._stopped is not None:
            env.wait_replaced(self._stopped)


@register("local")
@dataclass
class PauseReplica(Fault[LocalEnv]):
    """SIGSTOP one replica (alive but silent: its connections hang); SIGCONT on revert, then
    wait until it is ready again. A replica that vanished meanwhile needs no SIGCONT."""

    kind: ClassVar[str] = "pause_replica"
    service: str
    replica: int | None = None
    _paused: Entry | None = field(default=None, init=False, repr=False)

    def target(self) -> str:
        return f"{self.service}-{self.replica or '?'}"

    def apply(self, env: LocalEnv, rng: random.Random) -> None:
        self.replica, entry = pick_replica(env, self.service, self.replica, rng)
        send(env, entry, signal.SIGSTOP)
        self._paused = entry

    def revert(self, env: LocalEnv) -> None:
        if self._paused is not None:
            env.procs.signal(self._paused, signal.SIGCONT)
            env.wait(self._paused["name"], lambda e: bool(e["ready"]), "is ready again")


@register("local")
@dataclass
class StopComponent(Fault[LocalEnv]):
    """Stop a component (``kafka``, ``postgres``, …; any process of the stack) and keep it
    down: the supervisor holds it (no restart) while what depends on it keeps running.
    The revert releases it and waits until it is ready again."""

    kind: ClassVar[str] = "stop_component"
    component: str
    _held: bool = field(default=False, init=False, repr=False)

    def target(self) -> str:
        return self.component

    def apply(self, env: LocalEnv, rng: random.Random) -> None:
        if env.entry(self.component) is None:
            names = ", ".join(p["name"] for p in env.procs.processes())
            raise FaultError(f"no process {self.component!r} in this stack: {names}")
        env.procs.hold(self.component)
        self._held = True
        env.wait(
            self.component,
            lambda e: e["phase"] == "held" and e["pid"] is None,
            "is stopped and held by the supervisor",
        )

    def revert(self, env: LocalEnv) -> None:
        if self._held:
            env.procs.release(self.component)
            env.wait(
                self.component,
                lambda e: bool(e["ready"]) and not e.get("held"),
                "is released, started again and ready",
            )
