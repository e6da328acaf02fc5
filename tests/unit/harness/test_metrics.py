"""Metrics over recorded Prometheus answers: values, no data, errors, the SLO measurements
and the breaker's history through the recorded fault (100 % aborts into payments)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from harness.metrics import SOURCES, BreakerHistory, Metrics, MetricsError, Window


def test_error_ratio_seen_through_the_mesh_rises_during_the_fault(
    metrics: Metrics, windows: dict[str, Window]
) -> None:
    before = metrics.error_ratio("payments", windows["before"], source="mesh")
    during = metrics.error_ratio("payments", windows["during"], source="mesh")
    after = metrics.error_ratio("payments", windows["after"], source="mesh")
    assert before == 0.0
    assert during is not None
    assert during > 0.5
    assert after == 0.0


def test_the_service_own_view_misses_aborts_that_never_reached_it(
    metrics: Metrics, windows: dict[str, Window]
) -> None:
    assert metrics.error_ratio("orders", windows["during"]) == 0.0


def test_latency_quantiles_are_seconds(metrics: Metrics, windows: dict[str, Window]) -> None:
    for window in windows.values():
        p99 = metrics.latency_quantile("orders", window)
        assert p99 is not None
        assert 0 < p99 < 5
    mesh = metrics.latency_quantile("payments", windows["before"], source="mesh")
    assert mesh is not None
    assert 0 < mesh < 5  # Envoy's milliseconds, converted


def test_no_series_is_none_not_zero(metrics: Metrics, windows: dict[str, Window]) -> None:
    whole = Window(windows["before"].start, windows["after"].end)
    assert metrics.error_ratio("nosuch", whole) is None
    assert metrics.value("nosuch_metric_total", at=whole.end) is None


def test_value_reads_one_series_and_refuses_several_or_a_bad_query(
    metrics: Metrics, windows: dict[str, Window]
) -> None:
    end = windows["after"].end
    assert metrics.value('up{job="envoy"}', at=end) == 1.0
    with pytest.raises(MetricsError, match=r"^up: \d+ series, expected one: \[\{"):
        metrics.value("up", at=end)
    with pytest.raises(MetricsError, match=r"HTTP Status Code 400 .*parse error"):
        metrics.value("sum(rate(http_requests_total[5m])", at=end)


def test_the_breaker_opened_during_the_fault_and_closed_after(
    metrics: Metrics, windows: dict[str, Window]
) -> None:
    whole = Window(windows["before"].start, windows["after"].end)
    history = metrics.breaker_state("orders", "payments", whole)
    assert history.worst == "open"
    assert history.last == "closed"
    assert history.opened_at in windows["during"]
    assert history.assert_opened() is history
    assert history.assert_closed_at_end() is history
    text = str(history)
    assert text.startswith("breaker orders→payments: closed at ")
    assert " → open at " in text


def test_breaker_assertions_fail_naming_the_history(
    metrics: Metrics, windows: dict[str, Window]
) -> None:
    whole = Window(windows["before"].start, windows["after"].end)
    history = metrics.breaker_state("orders", "payments", whole)
    assert history.opened_at is not None
    still_open = BreakerHistory(
        "orders", "payments", [p for p in history.points if p[0] <= history.opened_at]
    )
    with pytest.raises(AssertionError, match=r"expected the breaker closed at the end; .* open at"):
        still_open.assert_closed_at_end()
    never = BreakerHistory("orders", "payments", [p for p in history.points if p[1] == 0])
    with pytest.raises(
        AssertionError, match=r"expected the breaker to open; breaker orders→payments: closed at"
    ):
        never.assert_opened()
    empty = BreakerHistory("orders", "payments", [])
    assert (empty.worst, empty.last, str(empty)) == (
        None,
        None,
        "breaker orders→payments: no samples",
    )


def test_window_helpers() -> None:
    end = datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)
    assert Window.last(30.2, end=end).promql_range == "31s"
    window = Window.last(30, end=end)
    assert window.seconds == 30
    assert end in window
    assert end + timedelta(seconds=1) not in window
    assert str(window) == "12:00:00 to 12:00:30 (30 s)"
    assert Window.since(end).start == end
    with pytest.raises(ValueError, match="timezone-aware"):
        Window(datetime(2026, 1, 1), datetime(2026, 1, 2))
    with pytest.raises(ValueError, match="must end after it starts"):
        Window(end, end)


def test_queries_escape_names_and_count_no_5xx_as_zero() -> None:
    query = SOURCES["service"].error_ratio('we"ird', "30s")
    assert 'service="we\\"ird"' in query
    assert "or vector(0)) / sum(increase(" in query
    assert SOURCES["mesh"].latency_quantile("payments", "30s", 0.5).endswith(" * 0.001")
