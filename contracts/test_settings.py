"""The suite's own plumbing: mode selection, per-mode settings, the missing-target line."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.settings import Mode, contract_mode, mode_settings
from contracts.targets import open_target
from harness.target import TargetError

pytestmark = pytest.mark.contract


def test_the_option_wins_over_the_environment_and_in_process_is_the_default() -> None:
    assert contract_mode(None, {}) is Mode.IN_PROCESS
    assert contract_mode(None, {"HARNESS_CONTRACT_MODE": "live"}) is Mode.LIVE
    assert contract_mode("in-process", {"HARNESS_CONTRACT_MODE": "live"}) is Mode.IN_PROCESS
    with pytest.raises(ValueError, match="'staging' is not one of in-process, live"):
        contract_mode("staging", {})


def test_each_mode_reads_its_own_project_over_the_shared_settings() -> None:
    local, live = mode_settings(Mode.IN_PROCESS), mode_settings(Mode.LIVE)
    assert local["seed"] == live["seed"]
    assert local["checks"]["ignored_auth"] == live["checks"]["ignored_auth"] == {"enabled": True}
    assert local["generation"]["max-examples"] < live["generation"]["max-examples"]
    assert "rate-limit" in live
    assert "rate-limit" not in local
    assert "project" not in local


def test_live_without_a_target_fails_with_the_targets_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HARNESS_GATEWAY_URL", raising=False)
    monkeypatch.setenv("HARNESS_STACK", "no-such-stack-here")
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path))
    with pytest.raises(TargetError, match="no running local stack 'no-such-stack-here'"):
        open_target(Mode.LIVE, tmp_path)
