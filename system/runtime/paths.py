"""Where the runtime keeps things: the per-user tool cache and the per-stack state folder."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
_STACK_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


def cache_root() -> Path:
    """Per-user cache of downloaded and built tools, shared by every clone (keyed by version).

    ``MICROHARNESS_CACHE`` overrides it; otherwise ``$XDG_CACHE_HOME/microharness``.
    """
    override = os.environ.get("MICROHARNESS_CACHE")
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "microharness"


def harness_home() -> Path:
    """The git-ignored folder holding every stack's state and logs (``HARNESS_HOME``)."""
    override = os.environ.get("HARNESS_HOME")
    return Path(override).expanduser() if override else PROJECT_ROOT / ".harness"


@dataclass(frozen=True)
class StackPaths:
    """The files of one stack: config it generated, component data, logs and its state file."""

    root: Path

    @classmethod
    def for_stack(cls, name: str, home: Path | None = None) -> StackPaths:
        if not _STACK_NAME.match(name):
            raise ValueError(
                f"stack name {name!r} is not valid: use 1-32 lowercase letters, digits or '-'"
            )
        return cls((home or harness_home()) / "stacks" / name)

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def holds(self) -> Path:
        """One empty file per held process: the supervisor keeps it stopped while it exists."""
        return self.root / "holds"

    @property
    def supervisor_log(self) -> Path:
        return self.logs / "supervisor.log"

    def log_of(self, component: str) -> Path:
        return self.logs / f"{component}.log"

    def ensure(self) -> None:
        for folder in (self.config, self.data, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
