"""Which spans a test means: ``Match(service="orders", name="saga *", kind="internal")``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.traces.model import Kind, Span


@dataclass(frozen=True)
class Match:
    """A span filter: every field given must match; ``name`` is a glob (``PUT /reservations/*``)."""

    service: str | None = None
    name: str | None = None
    kind: Kind | None = None

    def __call__(self, span: Span) -> bool:
        return (
            (self.service is None or span.service == self.service)
            and (self.name is None or fnmatchcase(span.name, self.name))
            and (self.kind is None or span.kind == self.kind)
        )

    def select(self, spans: Iterable[Span]) -> list[Span]:
        """The matching spans, by start time."""
        return sorted((span for span in spans if self(span)), key=lambda s: s.start_ns)

    def __str__(self) -> str:
        parts = [
            f"{field}={value!r}"
            for field, value in (
                ("service", self.service),
                ("name", self.name),
                ("kind", self.kind),
            )
            if value is not None
        ]
        return f"span({', '.join(parts) or 'any'})"
