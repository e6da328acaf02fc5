"""Every service's OpenAPI schema, fuzzed: every operation, every default check."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from schemathesis import Case
from schemathesis.specs.openapi.schemas import OpenApiSchema

from contracts.stateful import has_links, run_stateful

pytestmark = [
    pytest.mark.contract,
    # schemathesis' explicit-example generation (payments' card token example) draws with
    # the `random` module inside a strategy; Hypothesis deprecates that. Not ours to fix.
    pytest.mark.filterwarnings(
        "ignore:Do not use the `random` module inside strategies"
        ":hypothesis.errors.HypothesisDeprecationWarning"
    ),
]

schema = schemathesis.pytest.from_fixture("service_schema")


@schema.parametrize()
def test_every_operation_keeps_its_contract(case: Case[Any]) -> None:
    case.call_and_validate()


def test_linked_calls_keep_their_contract(service_schema: OpenApiSchema) -> None:
    """Stateful: schemathesis follows the schema's links (create → read → update →
    delete, register → login → me, authorize → capture → refund, ...) and runs every
    check on each step, use-after-free and resource availability included."""
    if not has_links(service_schema):
        pytest.skip("no links: the service creates nothing a later call reads")
    run_stateful(service_schema)
