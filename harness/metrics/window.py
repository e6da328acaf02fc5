"""A span of wall-clock time to measure over: the before, during and after of a fault."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Window:
    """``[start, end]``, timezone-aware; PromQL reads it as ``<fn>(...[seconds]) @ end``."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("a Window needs timezone-aware datetimes: use datetime.now(UTC)")
        if self.end <= self.start:
            raise ValueError(f"a Window must end after it starts: {self}")

    @classmethod
    def last(cls, seconds: float, *, end: datetime | None = None) -> Window:
        """The ``seconds`` up to ``end`` (default: now)."""
        end = end or now()
        return cls(end - timedelta(seconds=seconds), end)

    @classmethod
    def since(cls, start: datetime) -> Window:
        """From ``start`` to now."""
        return cls(start, now())

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    @property
    def promql_range(self) -> str:
        """The window's length as a PromQL range, whole seconds rounded up: ``30s``."""
        return f"{max(1, math.ceil(self.seconds))}s"

    def __contains__(self, moment: datetime) -> bool:
        return self.start <= moment <= self.end

    def __str__(self) -> str:
        return f"{self.start:%H:%M:%S} to {self.end:%H:%M:%S} ({self.seconds:g} s)"
