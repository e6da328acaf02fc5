"""How the CLI shows a stack: one rich table, used live by ``up`` and once by ``status``."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f} MiB"


def _health(entry: dict[str, Any]) -> str:
    if entry["ready"]:
        return "[green]ready[/]"
    if entry["phase"] == "backoff":
        return "[red]crashed[/]"
    return f"[yellow]{entry['phase']}[/]"


def stack_table(state: dict[str, Any] | None, *, title: str) -> Table:
    table = Table(title=title, title_justify="left", expand=False)
    for column in ("process", "health", "pid", "ports", "restarts", "memory"):
        table.add_column(column, justify="right" if column in ("pid", "restarts") else "left")
    if state is None:
        table.add_row("supervisor", "[yellow]starting[/]", "", "", "", "")
        return table
    for entry in state["processes"]:
        ports = " ".join(f"{k}={v}" for k, v in entry["ports"].items())
        table.add_row(
            entry["name"],
            _health(entry),
            str(entry["pid"] or "-"),
            ports,
            str(entry["restarts"]),
            _mib(entry.get("rss_bytes")),
        )
    total = sum(e.get("rss_bytes") or 0 for e in state["processes"])
    if any("rss_bytes" in e for e in state["processes"]):
        table.add_section()
        table.add_row("total", "", "", "", "", _mib(total))
    return table
