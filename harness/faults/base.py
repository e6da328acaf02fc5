"""What every fault shares: its record, the registry of kinds, the errors, deadline polling.

A fault is one small class per (flavour, kind): its constructor arguments are its
parameters, :meth:`Fault.apply` breaks something, :meth:`Fault.revert` puts it back (and
is a no-op for whatever ``apply`` never got to). Every random choice comes from the
``random.Random`` passed to ``apply``, seeded by :class:`~harness.faults.core.Faults`.

Exceptions::

    FaultError              a fault could not be applied (unknown target, bad parameter)
    ├── FaultNotSupported   this flavour has no such fault; the message says what to install
    ├── FaultTimeout        a wait's deadline passed; the message names what never happened
    └── FaultRevertError    the body ran but the revert failed: the system may still be faulty
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Generic, TypeVar

FLAVOURS = ("local", "kubernetes")
E = TypeVar("E")
T = TypeVar("T")
F = TypeVar("F", bound="type[Fault[Any]]")


class FaultError(RuntimeError):
    """A fault could not be applied; the message says which target and why."""


class FaultNotSupported(FaultError):
    """The target's flavour has no implementation of this fault."""


class FaultTimeout(FaultError):
    """Something a fault waits for never happened before the deadline."""


class FaultRevertError(FaultError):
    """Reverting a fault failed after its body succeeded."""


@dataclass
class FaultRecord:
    """One injected fault, as the report shows it (also one JSON line in the fault log)."""

    kind: str
    target: str
    params: dict[str, Any]
    seed: int
    flavour: str
    started_at: float
    ended_at: float | None = None
    reverted: bool = False
    error: str | None = None
    """Why applying or reverting failed (``None`` when all went well)."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)


class Fault(Generic[E]):
    """One kind of fault for one flavour. Subclasses are dataclasses of their parameters;
    attributes starting with ``_`` hold what ``apply`` found and are not parameters."""

    kind: ClassVar[str]

    def target(self) -> str:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def apply(self, env: E, rng: random.Random) -> None:
        raise NotImplementedError

    def revert(self, env: E) -> None:
        raise NotImplementedError


_REGISTRY: dict[str, dict[str, type[Fault[Any]]]] = {flavour: {} for flavour in FLAVOURS}


def register(flavour: str) -> Callable[[F], F]:
    """Class decorator: ``cls`` implements ``cls.kind`` for ``flavour``."""

    def add(cls: F) -> F:
        kinds = _REGISTRY[flavour]
        if cls.kind in kinds:
            raise ValueError(f"{flavour} fault {cls.kind!r} is registered twice")
        kinds[cls.kind] = cls
        return cls

    return add


def lookup(flavour: str, kind: str) -> type[Fault[Any]]:
    """The class of ``kind`` for ``flavour``; the error says what exists instead."""
    found = _REGISTRY.get(flavour, {}).get(kind)
    if found is not None:
        return found
    everywhere = catalog()
    if kind in everywhere:
        raise FaultNotSupported(
            f"fault {kind!r} has no {flavour} implementation (only {', '.join(everywhere[kind])})"
        )
    raise FaultError(f"no fault kind {kind!r}; known: {', '.join(sorted(everywhere))}")


def catalog() -> dict[str, list[str]]:
    """Every fault kind and the flavours that implement it."""
    kinds: dict[str, list[str]] = {}
    for flavour, registered in _REGISTRY.items():
        for kind in registered:
            kinds.setdefault(kind, []).append(flavour)
    return dict(sorted(kinds.items()))


def poll_until(
    check: Callable[[], T | None], description: str, *, timeout: float, interval: float = 0.1
) -> T:
    """Call ``check`` until it returns something truthy; :class:`FaultTimeout` names
    ``description`` (what never happened) when the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise FaultTimeout(f"timed out after {timeout:g}s waiting until {description}")
        time.sleep(interval)
