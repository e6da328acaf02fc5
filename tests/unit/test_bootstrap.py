"""The bootstrap runner: idempotent, all-or-nothing installs, one line per missing tool."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from rich.console import Console

from system.runtime import bootstrap
from system.runtime.bootstrap import Step, StepFailed, _install_into, _run, run_bootstrap


@pytest.fixture
def console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200, color_system=None), out


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MICROHARNESS_CACHE", str(tmp_path / "cache"))


def use_steps(monkeypatch: pytest.MonkeyPatch, *steps: Step) -> None:
    monkeypatch.setattr(bootstrap, "steps", lambda: list(steps))


def test_done_steps_are_not_run_again(
    monkeypatch: pytest.MonkeyPatch, console: tuple[Console, io.StringIO]
) -> None:
    ran: list[str] = []
    use_steps(monkeypatch, Step("kafka jars", done=lambda: True, run=lambda: ran.append("x")))
    assert run_bootstrap(console[0]) == 0
    assert ran == []
    assert "✓ kafka jars" in console[1].getvalue()


def test_a_missing_toolchain_is_one_line_naming_what_still_works(
    monkeypatch: pytest.MonkeyPatch, console: tuple[Console, io.StringIO]
) -> None:
    ran: list[str] = []
    use_steps(
        monkeypatch,
        Step(
            "jaeger build",
            done=lambda: False,
            run=lambda: ran.append("jaeger"),
            needs=("no-such-go-toolchain",),
            without_it="the rest runs without jaeger",
        ),
        Step("kafka jars", done=lambda: False, run=lambda: ran.append("kafka")),
    )
    assert run_bootstrap(console[0]) == 0
    assert ran == ["kafka"]
    lines = [line for line in console[1].getvalue().splitlines() if "jaeger build" in line]
    assert lines == [
        "! jaeger build: needs no-such-go-toolchain, which is missing; the rest runs without jaeger"
    ]


def test_a_failed_step_fails_the_bootstrap_and_shows_its_command(
    monkeypatch: pytest.MonkeyPatch, console: tuple[Console, io.StringIO]
) -> None:
    def broken() -> None:
        _run(
            [sys.executable, "-c", "print('no such artifact'); raise SystemExit(4)"],
            log_name="broken",
        )

    use_steps(monkeypatch, Step("kafka jars", done=lambda: False, run=broken))
    assert run_bootstrap(console[0]) == 1
    text = console[1].getvalue()
    assert "kafka jars failed" in text
    assert "no such artifact" in text


def test_check_only_reports_without_installing(
    monkeypatch: pytest.MonkeyPatch, console: tuple[Console, io.StringIO]
) -> None:
    ran: list[str] = []
    use_steps(monkeypatch, Step("kafka jars", done=lambda: False, run=lambda: ran.append("x")))
    assert run_bootstrap(console[0], check_only=True) == 1
    assert ran == []


def test_an_interrupted_install_leaves_nothing_half_written(tmp_path: Path) -> None:
    final = tmp_path / "kafka-9.9.9"

    def half_then_fail(dest: Path) -> None:
        (dest / "libs").mkdir()
        (dest / "libs" / "one.jar").write_text("x")
        raise StepFailed(["mvn"], tmp_path / "log", "network went away")

    with pytest.raises(StepFailed):
        _install_into(final, half_then_fail)
    assert list(tmp_path.iterdir()) == []

    _install_into(final, lambda dest: (dest / "ok").write_text("y"))
    assert (final / "ok").read_text() == "y"
    assert list(tmp_path.iterdir()) == [final]
