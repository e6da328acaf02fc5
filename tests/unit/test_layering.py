"""The dependency rule of docs/architecture.md: ``system/`` imports nothing from the rest."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUTSIDE_SYSTEM = ("harness", "contracts", "scenarios", "load", "chaos", "reports", "tests")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_system_imports_nothing_from_the_harness_or_the_suites() -> None:
    offenders = {
        f"{path.relative_to(ROOT)}: {module}"
        for path in (ROOT / "system").rglob("*.py")
        for module in imported_modules(path)
        if module.split(".")[0] in OUTSIDE_SYSTEM
    }
    assert not offenders, sorted(offenders)
