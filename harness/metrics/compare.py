"""Before, during and after a fault: one measurement over three windows, and the claims a
resilience test makes about them ("degraded, then recovered")::

    errors = compare(partial(metrics.error_ratio, "payments", source="mesh"),
                     before=before, during=during, after=after)
    errors.assert_degraded_then_recovered(by=0.2, within=0.05)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from harness.metrics.window import Window

Measure = Callable[[Window], float | None]


def _fmt(value: float | None) -> str:
    return "no data" if value is None else f"{value:.4g}"


@dataclass(frozen=True)
class Comparison:
    """One measurement in three windows; ``higher_is_worse`` for errors and latency."""

    name: str
    before: float | None
    during: float | None
    after: float | None
    higher_is_worse: bool = True

    def __str__(self) -> str:
        return (
            f"{self.name}: before {_fmt(self.before)}, during {_fmt(self.during)}, "
            f"after {_fmt(self.after)}"
        )

    def _worse(self, value: float, than: float) -> float:
        """How much worse ``value`` is than ``than`` (negative: better)."""
        return value - than if self.higher_is_worse else than - value

    def _known(self, *values: float | None) -> list[float]:
        if any(value is None for value in values):
            raise AssertionError(f"cannot compare without data: {self}")
        return [value for value in values if value is not None]

    def assert_degraded(self, *, by: float = 0.0) -> Comparison:
        """``during`` is worse than ``before`` by more than ``by``."""
        before, during = self._known(self.before, self.during)
        if self._worse(during, before) <= by:
            raise AssertionError(f"expected worse by more than {by:g} during the fault; {self}")
        return self

    def assert_recovered(self, *, within: float) -> Comparison:
        """``after`` is no worse than ``before`` + ``within``."""
        before, after = self._known(self.before, self.after)
        if self._worse(after, before) > within:
            raise AssertionError(f"expected back within {within:g} of before; {self}")
        return self

    def assert_degraded_then_recovered(self, *, by: float = 0.0, within: float) -> Comparison:
        return self.assert_degraded(by=by).assert_recovered(within=within)

    def assert_unaffected(self, *, within: float) -> Comparison:
        """Neither ``during`` nor ``after`` is worse than ``before`` + ``within``."""
        before, during, after = self._known(self.before, self.during, self.after)
        if max(self._worse(during, before), self._worse(after, before)) > within:
            raise AssertionError(f"expected no change beyond {within:g}; {self}")
        return self


def compare(
    measure: Measure,
    *,
    before: Window,
    during: Window,
    after: Window,
    name: str | None = None,
    higher_is_worse: bool = True,
) -> Comparison:
    """``measure`` over the three windows."""
    label = name or getattr(measure, "__name__", None) or repr(measure)
    return Comparison(label, measure(before), measure(during), measure(after), higher_is_worse)
