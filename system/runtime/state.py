"""The stack's settings (``stack.json``) and live state (``state.json``), written atomically.

``state.json`` exists exactly while a supervisor runs; it is what ``harness status``,
``down`` and the test fixtures read.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from system.runtime.paths import StackPaths
from system.runtime.topology import DEFAULT_TOPOLOGY_FILE, Topology, load_topology


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` so that readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class StackSettings:
    """What ``harness up`` was asked for; the daemon rebuilds the topology from it."""

    name: str = "default"
    port_base: int | None = None
    replicas: dict[str, int] = field(default_factory=dict)
    topology_file: str = str(DEFAULT_TOPOLOGY_FILE)
    without: tuple[str, ...] = ()
    """Infrastructure components left out (for machines lacking their toolchain)."""
    database: str = "sqlite"
    """``sqlite`` (a file per service) or ``postgres`` (a supervised server, one database
    per service); see :data:`system.runtime.topology.DATABASES`."""

    env: dict[str, dict[str, str]] = field(default_factory=dict)
    """Extra environment per service (e.g. a test stack's shorter saga lease)."""

    def topology(self) -> Topology:
        base = load_topology(Path(self.topology_file))
        return base.with_overrides(
            port_base=self.port_base, replicas=self.replicas, database=self.database, env=self.env
        )

    def save(self, paths: StackPaths) -> None:
        write_json_atomic(paths.root / "stack.json", asdict(self))

    @classmethod
    def load(cls, paths: StackPaths) -> StackSettings:
        data = json.loads((paths.root / "stack.json").read_text())
        data["without"] = tuple(data.get("without", ()))
        return cls(**data)


def read_state(paths: StackPaths) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(paths.state_file.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        return None
    return data
