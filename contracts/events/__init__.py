"""Event contracts: every registered Kafka event type, its JSON Schema, who produces it
and who consumes it, all derived from the code (never kept by hand).

* the **schema** is ``system.events.json_schema`` (msgspec's, from the typed payloads);
* the **producer** owns the event's topic (``orders.events`` → ``orders``);
* the **consumers** are the services whose ``consumers.HANDLERS`` name the type; a
  handler keyed by type accepts every registered version of it.

``python -m contracts.events`` writes ``contracts/events/schemas/`` (one file per type
and version, and ``catalog.json``); the suite fails when they are stale, and
:func:`breaking_changes` compares a committed schema with the current one.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from system.events.schemas import EVENT_TYPES, json_schema, topic_for
from system.runtime.topology import load_topology

SCHEMAS = Path(__file__).resolve().parent / "schemas"


@dataclass(frozen=True)
class EventContract:
    type: str
    version: int
    producer: str
    consumers: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.type} v{self.version}"

    @property
    def file(self) -> Path:
        return SCHEMAS / f"{self.type}.v{self.version}.json"

    def schema(self) -> dict[str, Any]:
        return json_schema(self.type, self.version)

    def parties(self) -> str:
        consumers = ", ".join(self.consumers) or "none"
        return f"producer: {self.producer}; consumers: {consumers}"


@cache
def handlers_by_service() -> dict[str, frozenset[str]]:
    """Service → the event types its consumers handle (from ``consumers.HANDLERS``)."""
    found: dict[str, frozenset[str]] = {}
    for service in load_topology().services:
        try:
            module = importlib.import_module(f"system.services.{service.name}.consumers")
        except ModuleNotFoundError:
            continue
        found[service.name] = frozenset(getattr(module, "HANDLERS", {}))
    return found


def catalog() -> list[EventContract]:
    """Every registered ``(type, version)``, in a stable order."""
    handled = handlers_by_service()
    return [
        EventContract(
            type=event_type,
            version=version,
            producer=topic_for(event_type).partition(".")[0],
            consumers=tuple(sorted(s for s, types in handled.items() if event_type in types)),
        )
        for event_type, version in sorted(EVENT_TYPES)
    ]


def render(document: Any) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def expected_files() -> dict[Path, str]:
    """What ``python -m contracts.events`` writes: file → its text."""
    contracts = catalog()
    files = {c.file: render(c.schema()) for c in contracts}
    files[SCHEMAS / "catalog.json"] = render(
        [
            {
                "type": c.type,
                "version": c.version,
                "producer": c.producer,
                "consumers": list(c.consumers),
                "schema": c.file.name,
            }
            for c in contracts
        ]
    )
    return files


def _envelope(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema["$ref"].rsplit("/", 1)[-1]
    envelope: dict[str, Any] = schema["$defs"][ref]
    return envelope


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def _compare(
    old_doc: dict[str, Any], new_doc: dict[str, Any], old: Any, new: Any, where: str
) -> list[str]:
    """What a reader of ``old`` would no longer accept from a writer of ``new`` (or the
    reverse, for consumers still on ``old``): removed or newly required fields, changed
    types, constants and tightened bounds."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [] if old == new else [f"{where}: changed from {old!r} to {new!r}"]
    old, new = _resolve(old_doc, old), _resolve(new_doc, new)
    problems: list[str] = []
    for key in ("type", "const", "enum", "format", "pattern"):
        if old.get(key) != new.get(key):
            problems.append(f"{where}: {key} changed from {old.get(key)!r} to {new.get(key)!r}")
    for key in ("minimum", "minLength", "minItems", "exclusiveMinimum"):
        if new.get(key, float("-inf")) > old.get(key, float("-inf")):
            problems.append(f"{where}: {key} raised to {new[key]!r}")
    for key in ("maximum", "maxLength", "maxItems", "exclusiveMaximum"):
        if new.get(key, float("inf")) < old.get(key, float("inf")):
            problems.append(f"{where}: {key} lowered to {new[key]!r}")
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    for name in old_props:
        if name not in new_props:
            problems.append(f"{where}.{name}: removed")
        else:
            problems += _compare(
                old_doc, new_doc, old_props[name], new_props[name], f"{where}.{name}"
            )
    for name in set(new.get("required", ())) - set(old.get("required", ())):
        problems.append(f"{where}.{name}: newly required")
    if "items" in old or "items" in new:
        problems += _compare(old_doc, new_doc, old.get("items"), new.get("items"), f"{where}[]")
    return problems


def breaking_changes(committed: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """How ``current`` breaks ``committed`` (empty when compatible: only optional fields
    added, bounds loosened)."""
    return _compare(committed, current, _envelope(committed), _envelope(current), "event")


def compatibility_report(contract: EventContract, committed: dict[str, Any]) -> str | None:
    """One message naming the event, its producer and consumers, and what broke."""
    problems = breaking_changes(committed, contract.schema())
    if not problems:
        return None
    return (
        f"{contract.name} changed incompatibly ({contract.parties()}): "
        + "; ".join(problems)
        + ". Register a new version beside the old one (system/events/schemas.py) instead."
    )
