"""A local stack as a context manager: for the pytest fixtures and for scripts.

It starts the supervisor detached, waits for readiness with a deadline, yields the
state (ports, pids) and always stops the stack, even when the body raises or the process
is sent SIGTERM.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from system.runtime import control
from system.runtime.paths import StackPaths
from system.runtime.state import StackSettings
from system.runtime.topology import PORT_SPAN, load_topology


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports: a stack must avoid it,
    or a client's socket may take one of its ports first."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def candidate_bases() -> list[int]:
    low, high = _ephemeral_range()
    bases = range(10 * PORT_SPAN, 65535 - PORT_SPAN, PORT_SPAN)
    return [
        b for b in bases if (b + PORT_SPAN - 1 < low or b > high) and b != load_topology().port_base
    ]


def _xdist_partition() -> tuple[int, int]:
    """(this worker's index, worker count) under pytest-xdist, else (0, 1): parallel
    workers draw from disjoint sets of bases, so two never pick the same one."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return int(worker.removeprefix("gw") or 0) % max(count, 1), max(count, 1)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now (the system picks it): for a
    one-off server, or an address that refuses connections."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def free_port_base(
    settings: StackSettings, *, exclude: Collection[int] = (), tries: int = 40
) -> int:
    """A port base outside the ephemeral range whose every port is free (throw-away stacks)."""
    rng = random.Random()  # noqa: S311 - picking ports, not secrets
    index, count = _xdist_partition()
    bases = [b for i, b in enumerate(candidate_bases()) if i % count == index and b not in exclude]
    for _ in range(tries):
        base = rng.choice(bases)
        topology = StackSettings(**{**settings.__dict__, "port_base": base}).topology()
        if not control.busy_ports(topology):
            return base
    raise control.StackError(f"no free port span of {PORT_SPAN} found in {tries} tries")


@contextmanager
def stopping_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM ends the process by ``SystemExit`` (status 143), so the
    ``finally`` blocks run: Python's default ends it at once, which left a benchmark's
    whole stack running after a ``kill``. Only in the main thread, and only where SIGTERM
    still has its default action (a runner that handles it keeps its own handler)."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    def leave(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, leave)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def local_stack(
    paths: StackPaths, settings: StackSettings, *, timeout: float = 180.0
) -> Iterator[dict[str, Any]]:
    with stopping_on_sigterm():
        pid = control.start(paths, settings)
        try:
            yield control.wait_ready(paths, pid, timeout=timeout)
        finally:
            control.stop(paths)


def events_only_topology(folder: Path) -> Path:
    """A topology file in ``folder`` with the default topology's Kafka topics and no
    services: a stack of Kafka and Toxiproxy only (with ``without=("envoy", "prometheus",
    "jaeger")``), for code that produces and consumes events itself."""
    lines = ["port_base = 30000", "[kafka.topics]"]
    lines += [
        f'"{t.name}" = {{ partitions = {t.partitions}, compacted = {str(t.compacted).lower()} }}'
        for t in load_topology().topics
    ]
    path = folder / "topology.toml"
    path.write_text("\n".join(lines) + "\n")
    return path
