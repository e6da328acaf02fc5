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


LINKED = ("users", "products", "payments", "orders")
"""The services whose schemas declare links; notifications and analytics only read
projections of events, so no call of theirs creates what a later one reads."""


@pytest.mark.parametrize("service_schema", LINKED, indirect=True)
def test_linked_calls_keep_their_contract(service_schema: OpenApiSchema) -> None:
    """Stateful: schemathesis follows the schema's links (create → read → update →
    delete, register → login → me, authorize → capture → refund, ...) and runs every
    check on each step, use-after-free and resource availability included."""
    run_stateful(service_schema)


def test_the_linked_services_are_exactly_those_whose_schema_has_links(
    service_schema: OpenApiSchema, request: pytest.FixtureRequest
) -> None:
    service = request.node.callspec.params["service_schema"]
    assert has_links(service_schema) == (service in LINKED), f"update LINKED for {service}"
