"""Which mode the suite runs in, and the schemathesis settings of that mode.

``schemathesis.toml`` at the repository root holds what the CLI and the suite share; its
``[[project]]`` tables titled ``contracts:<mode>`` hold what one mode of the suite changes
(merged over the top level here, then dropped, so no schema title ever selects them).
"""

from __future__ import annotations

import enum
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from schemathesis.config import SchemathesisConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIG_FILE = ROOT / "schemathesis.toml"
MODE_ENV = "HARNESS_CONTRACT_MODE"
MODE_OPTION = "--contract-target"


class Mode(enum.StrEnum):
    IN_PROCESS = "in-process"
    LIVE = "live"


def contract_mode(option: str | None, env: Mapping[str, str] | None = None) -> Mode:
    """The option wins over ``HARNESS_CONTRACT_MODE``; neither means in-process."""
    env = os.environ if env is None else env
    value = option or env.get(MODE_ENV) or Mode.IN_PROCESS.value
    try:
        return Mode(value)
    except ValueError:
        choices = ", ".join(m.value for m in Mode)
        raise ValueError(f"{MODE_OPTION} / {MODE_ENV}: {value!r} is not one of {choices}") from None


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def mode_settings(mode: Mode, path: Path = CONFIG_FILE) -> dict[str, Any]:
    """The file's settings as ``mode`` sees them (a plain dict, for reading and tests)."""
    data = tomllib.loads(path.read_text())
    projects = data.pop("project", [])
    own: dict[str, Any] = next((p for p in projects if p.get("title") == f"contracts:{mode}"), {})
    others = [p for p in projects if not str(p.get("title", "")).startswith("contracts:")]
    merged = _merge(data, {k: v for k, v in own.items() if k != "title"})
    if others:
        merged["project"] = others
    return merged


def schemathesis_config(mode: Mode, path: Path = CONFIG_FILE) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(mode_settings(mode, path), base_dir=str(path.parent))
