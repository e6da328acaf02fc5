"""Fixture ``faults``: fault injection into the target, seeded, recorded, always reverted.

A test that uses it must be marked ``destructive`` (it then runs alone, see
:mod:`harness.pytest_plugin.system`). The seed comes from ``--harness-seed`` /
``HARNESS_SEED`` or is drawn per test; it is printed with a failure and kept in the
test's ``user_properties`` with every fault record, so a failing run can be replayed.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.faults import FaultError, Faults
from harness.pytest_plugin.system import SESSION_DIR
from harness.target import Target


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("harness").addoption(
        "--harness-seed",
        type=int,
        default=int(os.environ["HARNESS_SEED"]) if os.environ.get("HARNESS_SEED") else None,
        help="seed of every random choice of the faults (HARNESS_SEED; default: per test)",
    )


@pytest.fixture
def fault_seed(request: pytest.FixtureRequest) -> int:
    chosen = request.config.getoption("harness_seed")
    seed = int(chosen) if chosen is not None else secrets.randbelow(2**31)
    request.node.user_properties.append(("fault_seed", seed))
    return seed


@pytest.fixture
def faults(
    target: Target, fault_seed: int, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Faults]:
    if request.node.get_closest_marker("destructive") is None:
        pytest.fail("a test that injects faults must be marked @pytest.mark.destructive")
    folder = Path(os.environ.get(SESSION_DIR, str(tmp_path)))
    try:
        injector = Faults.for_target(target, seed=fault_seed, log_path=folder / "faults.jsonl")
    except FaultError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield injector
    finally:
        injector.close()
        for record in injector.records:
            request.node.user_properties.append(("fault", record.to_json()))
        text = f"seed {fault_seed} (replay: --harness-seed {fault_seed})\n" + "\n".join(
            r.to_json() for r in injector.records
        )
        request.node.add_report_section("teardown", "faults", text)
        _attach_to_allure("faults", text)


def _attach_to_allure(name: str, text: str) -> None:
    """Into the Allure result too, when allure-pytest runs (``--alluredir``)."""
    try:
        import allure  # noqa: PLC0415 - optional: the plugin works without allure-pytest
    except ImportError:
        return
    allure.attach(text, name=name, attachment_type=allure.attachment_type.TEXT)
