"""Before/during/after comparisons and SLO checks, on the recorded fault and on made-up
numbers for the edge cases."""

from __future__ import annotations

from functools import partial

import pytest

from harness.metrics import SLO, Comparison, Metrics, Window, compare


def test_the_recorded_fault_degraded_the_mesh_error_ratio_then_recovered(
    metrics: Metrics, windows: dict[str, Window]
) -> None:
    errors = compare(
        partial(metrics.error_ratio, "payments", source="mesh"),
        name="payments mesh error ratio",
        **windows,
    )
    assert errors.assert_degraded_then_recovered(by=0.5, within=0.01) is errors
    with pytest.raises(AssertionError) as failed:
        errors.assert_unaffected(within=0.01)
    assert str(failed.value).startswith(
        "expected no change beyond 0.01; payments mesh error ratio: before 0, during "
    )


def test_degraded_fails_when_nothing_got_worse() -> None:
    flat = Comparison("p99", 0.1, 0.1, 0.1)
    with pytest.raises(AssertionError) as failed:
        flat.assert_degraded()
    assert str(failed.value) == (
        "expected worse by more than 0 during the fault; p99: before 0.1, during 0.1, after 0.1"
    )
    assert flat.assert_unaffected(within=0)


def test_recovered_fails_when_after_stays_worse() -> None:
    stuck = Comparison("error ratio", 0.0, 0.8, 0.3)
    assert stuck.assert_degraded(by=0.5)
    with pytest.raises(
        AssertionError, match=r"^expected back within 0.05 of before; error ratio: .* after 0.3$"
    ):
        stuck.assert_degraded_then_recovered(within=0.05)


def test_lower_is_worse_for_throughput_and_missing_data_cannot_compare() -> None:
    throughput = Comparison("orders/s", 100.0, 20.0, 95.0, higher_is_worse=False)
    assert throughput.assert_degraded_then_recovered(by=50, within=10)
    with pytest.raises(AssertionError, match="expected back within 1 of before"):
        throughput.assert_recovered(within=1)
    blind = Comparison("p99", None, 0.4, 0.1)
    with pytest.raises(AssertionError, match=r"^cannot compare without data: p99: before no data"):
        blind.assert_degraded()


def test_compare_names_the_measure_after_the_function() -> None:
    def always_one(window: Window) -> float:
        return 1.0

    window = Window.last(10)
    result = compare(always_one, before=window, during=window, after=window)
    assert str(result) == "always_one: before 1, during 1, after 1"


def test_slo_met_and_breached_with_readable_reasons(
    metrics: Metrics, windows: dict[str, Window]
) -> None:
    met = SLO(max_error_ratio=0.01, max_p99_s=5.0).check(metrics, "orders", windows["before"])
    assert met.ok
    assert met.assert_met() is met
    assert str(met).startswith("SLO of orders over ")
    assert ": met (error_ratio=0, p99_s=" in str(met)

    breached = SLO(max_error_ratio=0.01, source="mesh").check(
        metrics, "payments", windows["during"]
    )
    assert not breached.ok
    assert len(breached.breaches) == 1
    assert breached.breaches[0].startswith("error_ratio ")
    assert breached.breaches[0].endswith(" > 0.01")
    with pytest.raises(
        AssertionError, match=r"SLO of payments .*: breached: error_ratio .* > 0.01"
    ):
        breached.assert_met()

    fast = SLO(max_p99_s=1e-6).check(metrics, "orders", windows["before"])
    assert fast.breaches[0].startswith("p99_s ")


def test_an_slo_over_no_traffic_is_not_met(metrics: Metrics, windows: dict[str, Window]) -> None:
    whole = Window(windows["before"].start, windows["after"].end)
    result = SLO(max_error_ratio=0.01).check(metrics, "nosuch", whole)
    assert result.breaches == ["error_ratio: no data"]
    assert "error_ratio=no data" in str(result)
