"""Supervises processes the way a Deployment does.

Processes start in dependency order (``ProcessSpec.after`` waits for readiness), are
probed for readiness, are restarted with exponential backoff when they exit, and stop
in reverse dependency order: SIGTERM, then SIGKILL after the spec's grace period. Each
child also gets ``PR_SET_PDEATHSIG`` so that even a SIGKILLed supervisor leaves no
orphan behind.

A *held* process (:meth:`Supervisor.hold`) is stopped the same graceful way and is not
restarted until it is released: a component taken down on purpose (a broker outage),
while what depends on it keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from system.runtime.process import ProcessSpec, as_user

log = logging.getLogger("harness.supervisor")

PROBE_TIMEOUT = 5.0
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(frozen=True)
class Backoff:
    """Delay before restart number ``streak`` of a crash streak; a long run resets it."""

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0
    stable_after: float = 30.0

    def delay(self, streak: int) -> float:
        return min(self.maximum, self.initial * self.factor ** max(0, streak - 1))


@dataclass
class ProcessState:
    name: str
    role: str
    ports: dict[str, int]
    log: str
    phase: str = "waiting"
    """waiting → starting → running → (backoff → starting …) → stopping → stopped;
    a held process goes running → stopping → held → (released) starting …"""
    ready: bool = False
    pid: int | None = None
    create_time: float | None = None
    restarts: int = 0
    streak: int = 0
    last_exit: int | None = None
    started_at: float | None = None
    error: str | None = None
    held: bool = False
    """Stopped on purpose and kept down until released (not a crash, not restarted)."""


@dataclass
class _Running:
    spec: ProcessSpec
    state: ProcessState
    proc: asyncio.subprocess.Process | None = None
    ready_event: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def is_held(self) -> bool:  # a call, so that type narrowing does not outlive an await
        return self.state.held


class SupervisorError(RuntimeError):
    """The process list is inconsistent (unknown dependency, cycle, duplicate name)."""


def stop_layers(specs: Sequence[ProcessSpec]) -> list[list[str]]:
    """Group names by dependency depth; the supervisor stops the deepest layer first."""
    by_name = {s.name: s for s in specs}
    if len(by_name) != len(specs):
        raise SupervisorError("process names must be unique")
    depth: dict[str, int] = {}

    def visit(name: str, trail: tuple[str, ...]) -> int:
        if name in trail:
            raise SupervisorError(f"dependency cycle: {' -> '.join((*trail, name))}")
        if name not in by_name:
            raise SupervisorError(f"{trail[-1]!r} waits for unknown process {name!r}")
        if name not in depth:
            deps = by_name[name].after
            depth[name] = 1 + max((visit(d, (*trail, name)) for d in deps), default=-1)
        return depth[name]

    for spec in specs:
        visit(spec.name, ())
    layers: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for spec in specs:
        layers[depth[spec.name]].append(spec.name)
    return layers


class Supervisor:
    def __init__(
        self,
        specs: Sequence[ProcessSpec],
        logs: Path,
        *,
        backoff: Backoff | None = None,
        probe_interval: float = 0.25,
        on_change: Callable[[Supervisor], None] | None = None,
    ) -> None:
        self._layers = stop_layers(specs)
        self._logs = logs
        self._backoff = backoff or Backoff()
        self._probe_interval = probe_interval
        self._on_change = on_change
        self._stopping_flag = False
        self._stop_requested = asyncio.Event()
        self._holding: set[asyncio.Task[None]] = set()
        self._procs = {
            s.name: _Running(
                s, ProcessState(s.name, s.role, dict(s.ports), str(logs / f"{s.name}.log"))
            )
            for s in specs
        }

    # -- observation ---------------------------------------------------------------------
    @property
    def all_ready(self) -> bool:
        return all(r.state.ready for r in self._procs.values())

    def states(self) -> list[ProcessState]:
        return [r.state for r in self._procs.values()]

    def snapshot(self) -> list[dict[str, Any]]:
        return [asdict(r.state) for r in self._procs.values()]

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self)

    def stopping(self) -> bool:
        return self._stopping_flag

    # -- holds ---------------------------------------------------------------------------
    def hold(self, name: str) -> None:
        """Stop ``name`` gracefully (in the background) and keep it stopped until released."""
        r = self._running(name)
        if r.state.held or self.stopping():
            return
        r.state.held, r.state.ready = True, False
        r.released.clear()
        r.ready_event.clear()
        if not r.alive:
            r.state.phase, r.state.pid, r.state.create_time = "held", None, None
        log.warning("%s is held: stopping it until it is released", name)
        self._changed()
        task = asyncio.create_task(self._terminate(r), name=f"{name}:hold")
        self._holding.add(task)
        task.add_done_callback(self._holding.discard)

    def release(self, name: str) -> None:
        """Let ``name`` start again (readiness is probed and published as usual)."""
        r = self._running(name)
        if not r.state.held:
            return
        r.state.held, r.state.streak = False, 0
        r.released.set()
        log.info("%s is released", name)
        self._changed()

    def sync_holds(self, names: Collection[str]) -> None:
        """Hold exactly ``names`` (unknown names are ignored): the daemon's folder of holds."""
        for name, r in self._procs.items():
            if name in names and not r.state.held:
                self.hold(name)
            elif name not in names and r.state.held:
                self.release(name)

    def _running(self, name: str) -> _Running:
        try:
            return self._procs[name]
        except KeyError:
            raise SupervisorError(f"no process {name!r}: {', '.join(self._procs)}") from None

    # -- life cycle ----------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop_requested.set()

    async def run(self) -> None:
        """Start everything, keep it running until :meth:`request_stop`, then stop it all."""
        self._logs.mkdir(parents=True, exist_ok=True)
        tasks = [
            asyncio.create_task(coro, name=f"{name}:{kind}")
            for name, r in self._procs.items()
            for kind, coro in (("keep", self._keep_running(r)), ("probe", self._probe(r)))
        ]
        try:
            await self._stop_requested.wait()
        finally:
            await self._shutdown(tasks)

    async def _shutdown(self, tasks: list[asyncio.Task[None]]) -> None:
        self._stopping_flag = True
        for layer in reversed(self._layers):
            await asyncio.gather(*(self._stop(self._procs[name]) for name in layer))
        for task in (*tasks, *self._holding):
            task.cancel()
        await asyncio.gather(*tasks, *self._holding, return_exceptions=True)

    async def _stop(self, r: _Running) -> None:
        r.state.ready = False
        await self._terminate(r)
        r.state.phase, r.state.pid, r.state.create_time = "stopped", None, None
        self._changed()

    async def _terminate(self, r: _Running) -> None:
        """SIGTERM, then SIGKILL after the spec's grace; nothing if it is not running."""
        proc = r.proc
        if proc is None or proc.returncode is not None:
            return
        r.state.phase = "stopping"
        self._changed()
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), r.spec.stop_grace)
        except TimeoutError:
            log.warning("%s ignored SIGTERM for %.0fs: SIGKILL", r.spec.name, r.spec.stop_grace)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        r.state.last_exit = proc.returncode

    async def _sit_out(self, r: _Running) -> None:
        """While ``r`` is held: published as held, waiting for its release (or the end)."""
        r.state.phase, r.state.ready, r.state.pid, r.state.create_time = "held", False, None, None
        r.ready_event.clear()
        self._changed()
        waiters = [
            asyncio.create_task(r.released.wait()),
            asyncio.create_task(self._stop_requested.wait()),
        ]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _interruptible_sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_requested.wait(), seconds)

    async def _keep_running(self, r: _Running) -> None:
        for dep in r.spec.after:
            await self._procs[dep].ready_event.wait()
        loop = asyncio.get_running_loop()
        while not self.stopping():
            if r.state.held:
                await self._sit_out(r)
                continue
            started = loop.time()
            try:
                if r.spec.prepare is not None:
                    await r.spec.prepare()
                proc = await self._spawn(r)
                if r.is_held():  # held while it was starting
                    await self._terminate(r)
                returncode = await proc.wait()
                detail = f"exited with {returncode}"
            except Exception as exc:  # a failed start is a crash like any other
                returncode, detail = -1, f"failed to start: {exc}"
                r.state.error = str(exc)
            if self.stopping():
                return
            if r.is_held():  # stopped on purpose: not a crash, not restarted
                r.state.last_exit = returncode
                continue
            ran = loop.time() - started
            r.state.streak = 1 if ran >= self._backoff.stable_after else r.state.streak + 1
            r.state.restarts += 1
            r.state.last_exit = returncode
            r.state.phase, r.state.ready, r.state.pid = "backoff", False, None
            r.ready_event.clear()
            delay = self._backoff.delay(r.state.streak)
            log.warning("%s %s after %.1fs; restart in %.1fs", r.spec.name, detail, ran, delay)
            self._changed()
            await self._interruptible_sleep(delay)

    async def _spawn(self, r: _Running) -> asyncio.subprocess.Process:
        r.state.phase, r.state.error = "starting", None
        log_path = Path(r.state.log)
        with log_path.open("ab") as out:  # noqa: ASYNC230 - append-open of a local log
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            out.write(
                f"\n=== {stamp} start #{r.state.restarts + 1}: {' '.join(r.spec.argv)}\n".encode()
            )
            out.flush()
            proc = await asyncio.create_subprocess_exec(
                *r.spec.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, **r.spec.env},
                cwd=r.spec.cwd,
                preexec_fn=_die_with_parent,
                **as_user(r.spec.user),
            )
        r.proc = proc
        r.state.pid, r.state.phase, r.state.started_at = proc.pid, "running", time.time()
        with contextlib.suppress(psutil.Error):
            r.state.create_time = psutil.Process(proc.pid).create_time()
        log.info("%s started as pid %d", r.spec.name, proc.pid)
        self._changed()
        return proc

    async def _probe(self, r: _Running) -> None:
        while True:
            running = r.alive and not r.state.held
            ok = False
            if running and not self.stopping():
                ok = await self._check(r) and not r.state.held
            if ok != r.state.ready and not self.stopping():
                r.state.ready = ok
                if ok:
                    r.ready_event.set()
                    log.info("%s is ready", r.spec.name)
                else:
                    r.ready_event.clear()
                self._changed()
            await asyncio.sleep(self._probe_interval * (8 if ok else 1))

    async def _check(self, r: _Running) -> bool:
        try:
            if r.spec.probe is not None and not await asyncio.wait_for(
                r.spec.probe(), PROBE_TIMEOUT
            ):
                return False
            if not r.state.ready and r.spec.on_ready is not None:
                await asyncio.wait_for(r.spec.on_ready(), PROBE_TIMEOUT * 6)
        except Exception as exc:
            r.state.error = f"readiness: {exc!r}"
            return False
        return True
