"""Fault injection: one replica killed, paused or restarted; a mesh edge delayed or
aborted; a TCP toxic in front of Kafka or PostgreSQL; a component stopped and kept down.

    faults = Faults.for_target(target, seed=1234, log_path=report_dir / "faults.jsonl")
    with faults.kill_replica("orders"):      # the seeded RNG picks the replica
        ...
    async with faults.edge_delay("payments", delay_ms=500):   # in a coroutine
        ...
    faults.records                           # what was injected, with its seed

Each kind is a small class registered per flavour (``local``, ``kubernetes``):
:func:`catalog` lists them, :meth:`Faults.inject` runs any of them by name.
"""

from harness.faults import kubernetes, network, processes  # noqa: F401 - registers the kinds
from harness.faults.base import (
    FaultError,
    FaultNotSupported,
    FaultRecord,
    FaultRevertError,
    FaultTimeout,
    catalog,
)
from harness.faults.core import Faults

__all__ = [
    "FaultError",
    "FaultNotSupported",
    "FaultRecord",
    "FaultRevertError",
    "FaultTimeout",
    "Faults",
    "catalog",
]
