"""How many cases each service got: a schemathesis ``after_call`` hook counting requests
per schema title, shown at the end of a run (without xdist: workers keep their own)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import schemathesis
from schemathesis import Case, HookContext, Response

CALLS: Counter[str] = Counter()


@schemathesis.hook
def after_call(context: HookContext, case: Case[Any], response: Response) -> None:
    title = case.operation.schema.raw_schema.get("info", {}).get("title", "?")
    CALLS[str(title)] += 1


def summary() -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(CALLS.items()))
