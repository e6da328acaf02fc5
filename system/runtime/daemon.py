"""The supervisor process of one stack: ``python -m system.runtime.daemon STACK_DIR``.

It holds the stack's lock, writes ``state.json`` on every change, keeps the processes
named in ``holds/`` stopped (see :func:`system.runtime.control.hold`), and on SIGTERM or
SIGINT stops every process it started and removes its state and lock files.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import sys
import time
from pathlib import Path

from system.runtime.components import build_specs, write_configs
from system.runtime.control import read_holds
from system.runtime.paths import StackPaths
from system.runtime.state import StackSettings, write_json_atomic
from system.runtime.supervisor import Supervisor


class StackBusy(RuntimeError):
    """Another supervisor already runs this stack."""


def _lock(paths: StackPaths) -> int:
    fd = os.open(paths.root / "supervisor.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise StackBusy(f"stack {paths.root.name!r} already has a supervisor") from exc
    return fd


async def watch_holds(paths: StackPaths, supervisor: Supervisor, interval: float = 0.2) -> None:
    """Apply the ``holds/`` folder to the supervisor, polling it (one file per held name)."""
    while True:
        supervisor.sync_holds(read_holds(paths))
        await asyncio.sleep(interval)


async def supervise(paths: StackPaths, settings: StackSettings) -> None:
    """Run the stack until SIGTERM/SIGINT; the state file lives exactly as long as this."""
    topology = settings.topology()
    paths.ensure()
    write_configs(topology, paths, settings)
    specs = build_specs(topology, paths, settings)
    started = time.time()

    def publish(supervisor: Supervisor) -> None:
        write_json_atomic(
            paths.state_file,
            {
                "stack": settings.name,
                "supervisor_pid": os.getpid(),
                "started_at": started,
                "port_base": topology.port_base,
                "ports": topology.ports.as_dict(),
                "all_ready": supervisor.all_ready,
                "processes": supervisor.snapshot(),
            },
        )

    supervisor = Supervisor(specs, paths.logs, on_change=publish)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, supervisor.request_stop)
    publish(supervisor)
    holds = asyncio.create_task(watch_holds(paths, supervisor))
    try:
        await supervisor.run()
    finally:
        holds.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await holds
        paths.state_file.unlink(missing_ok=True)


def run(paths: StackPaths) -> int:
    settings = StackSettings.load(paths)
    paths.ensure()
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # every probe would be a line
    try:
        lock = _lock(paths)
    except StackBusy as exc:
        logging.getLogger("harness.supervisor").error("%s", exc)
        return 3
    try:
        asyncio.run(supervise(paths, settings))
    finally:
        (paths.root / "supervisor.lock").unlink(missing_ok=True)
        os.close(lock)
    return 0


if __name__ == "__main__":
    sys.exit(run(StackPaths(Path(sys.argv[1]))))
