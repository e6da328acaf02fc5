"""CPU time each process of a stack spends during a measured window, per unit of work.

    with CpuShare(state) as share:
        ...  # drive the load
    share.print(per=requests, unit="request")

Reads every stack process's user + system time (with its children) from the kernel
before and after, and the supervisor's own (it probes every process all along), so a
figure says which component a unit of work costs most in: the lever to pull next,
measured on the live stack rather than in-process.

Measured once idle just before the load and once under it, the cost splits in two
(:func:`capacity`): what the stack spends doing nothing (relays polling, consumers
fetching, Kafka's own timers, scrapes) and what each unit of work adds; that gives the
ceiling on this machine's cores and the cores a target rate needs.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from types import TracebackType
from typing import Any

import psutil


def _cpu_seconds(pid: int | None, *, children: bool = True) -> float:
    if not pid:
        return 0.0
    try:
        root = psutil.Process(pid)
        tree = [root, *(root.children(recursive=True) if children else ())]
    except psutil.Error:
        return 0.0
    total = 0.0
    for proc in tree:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def machine_speed(additions: int = 10_000_000) -> float:
    """Seconds one core takes for ``additions`` pure-Python additions (in a function:
    local variables): how fast this machine's cores are right now. The same code took
    30-40% more CPU per order from one hour to the next on the shared two-core machines
    here, so a benchmark prints this beside its figures, to compare runs of different
    hours and days."""
    began = time.process_time()
    total = 0
    for n in range(additions):
        total += n
    return time.process_time() - began


class CpuShare:
    """CPU seconds per stack process over the ``with`` block."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.pids = {p["name"]: p.get("pid") for p in state["processes"]}
        self.supervisor: int | None = state.get("supervisor_pid")
        self.used: dict[str, float] = {}
        self.seconds = 0.0

    def _read(self) -> dict[str, float]:
        used = {name: _cpu_seconds(pid) for name, pid in self.pids.items()}
        used["supervisor"] = _cpu_seconds(self.supervisor, children=False)  # not its processes
        # the load generator shares the machine: this process, and the children it
        # waited for (wrk)
        me, children = os.times(), resource.getrusage(resource.RUSAGE_CHILDREN)
        used["load generator"] = me.user + me.system + children.ru_utime + children.ru_stime
        return used

    def __enter__(self) -> CpuShare:
        self._before, self._began = self._read(), time.perf_counter()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        after = self._read()
        self.seconds = time.perf_counter() - self._began
        self.used = {name: after[name] - self._before[name] for name in after}

    def cores(self, name: str | None = None) -> float:
        """Cores the stack (or process ``name``) used on average over the window."""
        if name is not None:
            return self.used.get(name, 0.0) / self.seconds
        return sum(v for k, v in self.used.items() if k != "load generator") / self.seconds

    def print(self, *, per: float, unit: str) -> None:
        """One line per process: share of a core, and CPU milliseconds per ``unit``."""
        total = self.cores() * self.seconds
        print(
            f"CPU by process over {self.seconds:.1f} s: {total / self.seconds:.2f} cores "
            f"for the stack ({total / max(per, 1) * 1000:.3f} ms per {unit}), plus the "
            f"load generator's {self.used['load generator'] / self.seconds:.2f}"
        )
        for name, used in sorted(self.used.items(), key=lambda item: -item[1]):
            if used >= 0.01 * self.seconds:
                print(
                    f"  {name:18} {used / self.seconds * 100:6.1f}% of a core  "
                    f"{used / max(per, 1) * 1000:8.3f} ms per {unit}"
                )


def replica_count(value: str) -> tuple[str, int]:
    """``--replicas products=1``: a benchmark's topology override, as ``harness up`` takes."""
    service, _, count = value.partition("=")
    if not service or not count.isdigit() or int(count) < 1:
        raise argparse.ArgumentTypeError(f"expected SERVICE=N with N >= 1, got {value!r}")
    return service, int(count)


def capacity(
    idle: CpuShare, loaded: CpuShare, *, done: int, unit: str, target: float | None = None
) -> None:
    """Print the fixed cost, the marginal CPU per ``unit`` and what they imply: ``done``
    units finished in ``loaded``'s window, ``idle`` measured on the same stack unloaded."""
    if done < 1 or not loaded.seconds or not idle.seconds:
        return
    fixed = idle.cores()
    marginal = (loaded.cores() - fixed) * loaded.seconds / done
    if marginal <= 0:
        print("capacity model: the load used no more CPU than the idle stack; run it longer")
        return
    cores = os.cpu_count() or 1
    print(
        f"capacity model: {fixed:.2f} cores fixed (the stack idle), "
        f"{marginal * 1000:.1f} ms of CPU per {unit} on top; "
        f"{cores} cores saturate at ~{(cores - fixed) / marginal:.0f} {unit}s/s"
        + (f"; {target:g}/s needs ~{fixed + target * marginal:.1f} cores" if target else "")
    )
    print(f"  {'process':18} {'idle':>9} {'loaded':>9}  marginal per {unit}")
    for name in sorted(loaded.used, key=lambda n: -loaded.used[n]):
        if name == "load generator" or loaded.used[name] < 0.01 * loaded.seconds:
            continue
        extra = (loaded.cores(name) - idle.cores(name)) * loaded.seconds / done
        print(
            f"  {name:18} {idle.cores(name) * 100:7.1f}% {loaded.cores(name) * 100:7.1f}%  "
            f"{extra * 1000:8.3f} ms"
        )
