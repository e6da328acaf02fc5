"""Service-level objectives, checked over a window: ``SLO(...).check(metrics, service, w)``."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.metrics.client import Metrics
from harness.metrics.window import Window


@dataclass(frozen=True)
class SLOResult:
    """What was measured and every objective it breached (no data is a breach: an SLO
    over zero requests proves nothing)."""

    service: str
    window: Window
    measured: dict[str, float | None]
    breaches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.breaches

    def __str__(self) -> str:
        values = ", ".join(
            f"{k}={'no data' if v is None else f'{v:.4g}'}" for k, v in self.measured.items()
        )
        verdict = "met" if self.ok else "breached: " + "; ".join(self.breaches)
        return f"SLO of {self.service} over {self.window}: {verdict} ({values})"

    def assert_met(self) -> SLOResult:
        if not self.ok:
            raise AssertionError(str(self))
        return self


@dataclass(frozen=True)
class SLO:
    """Objectives for one service; a None objective is not checked."""

    max_error_ratio: float | None = None
    max_p99_s: float | None = None
    source: str = "service"
    """Whose view: ``service`` (its own metrics) or ``mesh`` (callers', through Envoy)."""

    def check(self, metrics: Metrics, service: str, window: Window) -> SLOResult:
        measured: dict[str, float | None] = {}
        breaches: list[str] = []
        objectives = (
            ("error_ratio", self.max_error_ratio, metrics.error_ratio),
            ("p99_s", self.max_p99_s, metrics.latency_quantile),
        )
        for name, limit, measure in objectives:
            if limit is None:
                continue
            value = measure(service, window, source=self.source)
            measured[name] = value
            if value is None:
                breaches.append(f"{name}: no data")
            elif value > limit:
                breaches.append(f"{name} {value:.4g} > {limit:g}")
        return SLOResult(service, window, measured, breaches)
