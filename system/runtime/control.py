"""Client side of a stack's supervisor: start it, wait for readiness, read status, stop it.

Used by the ``harness`` CLI and the pytest plugin. The supervisor itself is
:mod:`system.runtime.daemon`, always a separate process.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import psutil

from system.runtime.components import preflight
from system.runtime.paths import PROJECT_ROOT, StackPaths
from system.runtime.state import StackSettings, read_state
from system.runtime.tools import ToolMissing
from system.runtime.topology import Topology

DAEMON_MODULE = "system.runtime.daemon"
_launched: dict[int, subprocess.Popen[bytes]] = {}
"""Supervisors this process launched, kept so they can be reaped (no zombie, no warning)."""


@atexit.register
def _leave_running_supervisors() -> None:
    """A supervisor may outlive the process that launched it, by design: the pytest worker
    that started the session's stack exits before the controller stops it. Its handle is
    dropped here without the "subprocess is still running" warning that Popen gives at
    interpreter exit (an error under ``-W error``, a traceback in every CI log)."""
    for pid in list(_launched):
        proc = _launched.pop(pid)
        if proc.poll() is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                del proc  # the handle's finalizer runs here, warning filtered


class StackError(RuntimeError):
    """A stack operation failed; the message says why and what to do."""


def _is_daemon(pid: int) -> bool:
    try:
        return DAEMON_MODULE in " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return False


def _same_process(pid: int | None, create_time: float | None) -> psutil.Process | None:
    """The process ``pid`` if it is still the one we started (not a reused pid)."""
    if pid is None:
        return None
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 0.05:
            return None
        return proc if proc.status() != psutil.STATUS_ZOMBIE else None
    except psutil.Error:
        return None


def supervisor_pid(paths: StackPaths) -> int | None:
    state = read_state(paths)
    if state is None:
        return None
    pid = int(state["supervisor_pid"])
    return pid if _is_daemon(pid) else None


def busy_ports(topology: Topology) -> dict[str, int]:
    """Ports of the topology that something already listens on."""
    busy = {}
    for name, port in topology.all_ports().items():
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                busy[name] = port
    return busy


def start(paths: StackPaths, settings: StackSettings, *, detached: bool = True) -> int:
    """Launch the stack's supervisor; returns its pid. Readiness is :func:`wait_ready`'s job."""
    if supervisor_pid(paths) is not None:
        raise StackError(f"stack {settings.name!r} is already running: `harness status`")
    topology = settings.topology()
    try:
        preflight(settings.without, settings.database)
    except ToolMissing as exc:
        hint = (
            ""
            if settings.database == "postgres" and "postgres" in str(exc)
            else (" (or leave it out with --without)")
        )
        raise StackError(f"{exc}{hint}") from exc
    busy = busy_ports(topology)
    if busy:
        listed = ", ".join(f"{n}={p}" for n, p in list(busy.items())[:5])
        raise StackError(
            f"ports of stack {settings.name!r} are in use ({listed}): stop what holds them, "
            "or choose another base with --port-base"
        )
    paths.ensure()
    _remove_stale_files(paths)
    settings.save(paths)
    with paths.supervisor_log.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", DAEMON_MODULE, str(paths.root)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
            start_new_session=detached,
        )
    _launched[proc.pid] = proc
    return proc.pid


def wait_ready(
    paths: StackPaths,
    pid: int,
    *,
    timeout: float,
    on_update: Callable[[dict[str, Any] | None], None] | None = None,
) -> dict[str, Any]:
    """Poll ``state.json`` until every process is ready; fail fast if the supervisor dies."""
    deadline = time.monotonic() + timeout
    while True:
        state = read_state(paths)
        if on_update is not None:
            on_update(state)
        if state is not None and state.get("all_ready"):
            return state
        if not _alive(pid):
            raise StackError(
                "the supervisor exited during start-up; its log ends with:\n"
                + tail(paths.supervisor_log, 15)
            )
        if time.monotonic() > deadline:
            waiting = [p["name"] for p in (state or {}).get("processes", []) if not p["ready"]]
            raise StackError(
                f"not ready after {timeout:.0f}s: {', '.join(waiting) or 'supervisor'}; "
                f"see `harness logs NAME` ({paths.logs})"
            )
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    launched = _launched.get(pid)
    if launched is not None and launched.poll() is not None:
        del _launched[pid]
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def stop(paths: StackPaths, *, timeout: float = 60.0) -> bool:
    """Stop the stack gracefully; returns False if it was not running.

    SIGTERM to the supervisor (which stops its children in order); if it does not exit in
    ``timeout``, SIGKILL it and every child it recorded. Leaves no state or lock file.
    """
    state = read_state(paths)
    pid = supervisor_pid(paths)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for entry in (state or {}).get("processes", []):
        proc = _same_process(entry.get("pid"), entry.get("create_time"))
        if proc is not None:
            with contextlib.suppress(psutil.Error):
                proc.kill()
                proc.wait(5)
    _remove_stale_files(paths)
    return pid is not None


def _remove_stale_files(paths: StackPaths) -> None:
    paths.state_file.unlink(missing_ok=True)
    (paths.root / "supervisor.lock").unlink(missing_ok=True)
    shutil.rmtree(paths.holds, ignore_errors=True)  # holds live as long as their supervisor


# -- holds: a process kept stopped on purpose --------------------------------------------
def read_holds(paths: StackPaths) -> set[str]:
    """The names held now (the daemon polls this)."""
    try:
        return {p.name for p in paths.holds.iterdir() if not p.name.startswith(".")}
    except FileNotFoundError:
        return set()


def hold(paths: StackPaths, name: str) -> None:
    """Ask the running supervisor to stop ``name`` gracefully and keep it down (it does not
    restart it, and nothing that depends on it is stopped) until :func:`release`."""
    _process_names(paths, name)
    paths.holds.mkdir(parents=True, exist_ok=True)
    (paths.holds / name).touch()


def release(paths: StackPaths, name: str) -> None:
    """Let ``name`` start again; readiness shows in ``state.json`` as usual."""
    _process_names(paths, name)
    (paths.holds / name).unlink(missing_ok=True)


def _process_names(paths: StackPaths, name: str) -> list[str]:
    state = read_state(paths)
    if state is None or supervisor_pid(paths) is None:
        raise StackError(f"stack {paths.root.name!r} is not running: `harness up`")
    names = [p["name"] for p in state["processes"]]
    if name not in names:
        raise StackError(f"stack {paths.root.name!r} has no process {name!r}: {', '.join(names)}")
    return names


def wait_process(
    paths: StackPaths,
    name: str,
    condition: Callable[[dict[str, Any]], bool],
    description: str,
    *,
    timeout: float,
) -> dict[str, Any]:
    """Poll ``state.json`` until process ``name``'s entry meets ``condition``."""
    deadline = time.monotonic() + timeout
    while True:
        state = read_state(paths) or {}
        processes: list[dict[str, Any]] = state.get("processes", [])
        entry = next((p for p in processes if p["name"] == name), None)
        if entry is not None and condition(entry):
            return entry
        if time.monotonic() > deadline:
            raise StackError(f"{name} did not {description} within {timeout:.0f}s")
        time.sleep(0.1)


def status(paths: StackPaths) -> dict[str, Any] | None:
    """The live state plus each process's resident memory; ``None`` if not running."""
    if supervisor_pid(paths) is None:
        return None
    state = read_state(paths)
    if state is None:
        return None
    for entry in state["processes"]:
        proc = _same_process(entry.get("pid"), entry.get("create_time"))
        entry["rss_bytes"] = _tree_rss(proc) if proc is not None else None
    return state


def _tree_rss(proc: psutil.Process) -> int | None:
    try:
        return int(proc.memory_info().rss) + sum(
            int(c.memory_info().rss) for c in proc.children(recursive=True)
        )
    except psutil.Error:
        return None


def tail(path: os.PathLike[str], lines: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            return "\n".join(fh.read().decode(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log yet)"
