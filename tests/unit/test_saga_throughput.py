"""The saga benchmark's sweep: its rate list and the verdict over several runs."""

from __future__ import annotations

import argparse

import pytest

from benchmarks.saga_throughput import over_time, rates, summary


def run(offered: float, *, errors: int = 0, p99_ms: float = 100.0) -> dict[str, float]:
    return {
        "offered": offered,
        "sustained": offered,
        "errors": errors,
        "unfinished": 0,
        "accept_p50": 0.01,
        "accept_p99": 0.05,
        "confirm_p50": 0.03,
        "confirm_p99": p99_ms / 1000,
        "cpu_per_order": 0.02,
        "machine_s": 1.25,
    }


def test_rates_are_one_or_several_positive_numbers() -> None:
    assert rates("90") == [90.0]
    assert rates("50,70, 90") == [50.0, 70.0, 90.0]
    for bad in ("", "0", "50,-1", "fast"):
        with pytest.raises(argparse.ArgumentTypeError):
            rates(bad)


def test_a_rate_counts_only_if_every_run_at_it_passed() -> None:
    runs = [
        run(50, p99_ms=120),
        run(50, p99_ms=140),
        run(90, p99_ms=280),
        run(90, p99_ms=900),  # one slow repeat: 90/s kept zero errors, not the p99
        run(110, errors=3),
        run(110),
    ]
    *table, clean, fast = summary(runs, slo_ms=300)
    assert len(table) == 1 + len(runs)
    assert table[0].endswith("machine")
    assert table[1].endswith("20.0 ms    1.25s")  # CPU per order, then the machine's speed
    assert clean.endswith(": 90/s")
    assert fast.endswith(": 50/s")


def test_no_rate_passes_when_every_run_failed() -> None:
    *_, clean, fast = summary([run(200, errors=5)], slo_ms=300)
    assert clean.endswith(": none")
    assert fast.endswith(": none")


def test_latency_over_time_slices_orders_by_when_they_were_placed() -> None:
    placed = {f"o{i}": float(i) for i in range(12)}  # one order a second for 12 s
    outcome = {
        order: ("order.confirmed", sent + (2.0 if sent < 6 else 0.1), 0.0)
        for order, sent in placed.items()
    }
    outcome["o11"] = ("order.cancelled", 20.0, 0.0)  # not a confirmation: left out
    lines = over_time(placed, outcome, began=0.0, sent_in=12.0, windows=2)
    assert lines[0].startswith("place-to-confirmed over the run")
    first, second = lines[1:]
    for text in ("0.0-  6.0 s", "6 orders", "p50  2000.0 ms"):
        assert text in first
    for text in ("6.0- 12.0 s", "5 orders", "p50   100.0 ms"):
        assert text in second
