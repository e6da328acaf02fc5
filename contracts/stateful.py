"""Stateful runs that report what they found.

A stateful run talks to a system whose state it changes: when Hypothesis replays a
choice sequence (to explore, shrink or report), the responses differ (the SKU created the
first time is a 409 the second) and it stops with ``Flaky`` / ``FlakyStrategyDefinition``.
Like schemathesis' own engine, such a stop is not a failure by itself: the first failure
a step saw is raised (schemathesis' message, ``curl`` command included), and a run that
saw none passes. Shrinking is off (it can only replay), and so is the example database.
"""

from __future__ import annotations

from typing import Any

import hypothesis
from hypothesis import Phase
from hypothesis.errors import Flaky, FlakyStrategyDefinition
from schemathesis import Case, Response
from schemathesis.specs.openapi.schemas import OpenApiSchema


def has_links(schema: OpenApiSchema) -> bool:
    return any(
        response.get("links")
        for item in schema.raw_schema.get("paths", {}).values()
        for operation in item.values()
        if isinstance(operation, dict)
        for response in operation.get("responses", {}).values()
    )


def run_stateful(schema: OpenApiSchema) -> None:
    """Follow ``schema``'s links with every check on; raise the first failure found."""
    found: list[BaseException] = []
    base = schema.as_state_machine()

    class Machine(base):  # type: ignore[valid-type, misc]
        def validate_response(
            self, response: Response, case: Case[Any], *args: Any, **kwargs: Any
        ) -> None:
            try:
                super().validate_response(response, case, *args, **kwargs)
            except Exception as exc:
                found.append(exc)
                raise

    configured = schema.config.get_hypothesis_settings(phase="stateful")
    settings = hypothesis.settings(configured, phases=[Phase.generate], database=None)
    try:
        Machine.run(settings=settings)
    except (Flaky, FlakyStrategyDefinition):
        if found:
            raise found[0] from None
