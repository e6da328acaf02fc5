"""What the chassis adds to every service's OpenAPI document, once, when the app is built.

Litestar derives the document from the handlers; three things it cannot know:

* **links** (OpenAPI 3.1 §4.8.20): which value of a response feeds which later call, e.g.
  ``POST /`` → ``201`` → ``GET /{product_id}`` with ``$response.body#/id``. Stateful
  tests (schemathesis) follow them to chain create → read → update → delete. A service
  declares them as :class:`Link` values by method and path; a link naming an operation
  or status that does not exist fails the build.
* **public operations**: the JWT check documents ``security: BearerToken`` for the whole
  API; the service's public paths (register, login, JWKS) get ``security: []``, since a
  client calls them without a token.
* **400 answers are problems**: Litestar documents the 400 it adds for validated
  parameters as its own ``application/json`` body, while the chassis answers every error
  with ``application/problem+json``; that entry is replaced by the problem.

And :class:`StrictStructSchemaPlugin` makes a request body's schema say what the server
enforces: a Struct that forbids unknown fields is ``additionalProperties: false``, and
the constraints Litestar drops (a zero bound such as ``ge=0`` on an optional field, see
``_apply_kwarg_definition_metadata``) come back from msgspec's own JSON schema.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.openapi.spec import Link as OpenAPILink
from litestar.openapi.spec import (
    OpenAPI,
    OpenAPIMediaType,
    OpenAPIResponse,
    Operation,
    PathItem,
    Reference,
    Schema,
)
from litestar.typing import FieldDefinition

from system.chassis.problems import PROBLEM_JSON

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator

METHODS = ("get", "put", "post", "delete", "patch")


@dataclass(frozen=True)
class Link:
    """A response value that feeds a later call of the same service."""

    name: str
    source: str
    """``"METHOD /path"`` of the operation whose response carries the value."""
    status: int
    target: str
    """``"METHOD /path"`` of the operation to call next."""
    parameters: Mapping[str, str] = field(default_factory=dict)
    """Target parameter (``product_id`` or ``path.product_id``) → runtime expression."""
    request_body: Any = None
    """The target's body, runtime expressions allowed inside (``"$response.body#/id"``)."""


_CONSTRAINTS = {
    "minimum": "minimum",
    "maximum": "maximum",
    "exclusiveMinimum": "exclusive_minimum",
    "exclusiveMaximum": "exclusive_maximum",
    "minLength": "min_length",
    "maxLength": "max_length",
    "minItems": "min_items",
    "maxItems": "max_items",
    "pattern": "pattern",
}
"""msgspec JSON schema keyword → Litestar ``Schema`` attribute."""


class StrictStructSchemaPlugin(StructSchemaPlugin):
    """Request Structs (``forbid_unknown_fields``) documented as strictly as decoded."""

    def is_plugin_supported_field(self, field_definition: FieldDefinition) -> bool:
        return super().is_plugin_supported_field(field_definition) and bool(
            field_definition.type_.__struct_config__.forbid_unknown_fields
        )

    def to_openapi_schema(
        self, field_definition: FieldDefinition, schema_creator: SchemaCreator
    ) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        schema.additional_properties = False
        cls = field_definition.type_
        own = msgspec.json.schema(cls)["$defs"][cls.__name__]
        for name, declared in own["properties"].items():
            prop = (schema.properties or {}).get(name)
            if not isinstance(prop, Schema):
                continue
            for keyword, attribute in _CONSTRAINTS.items():
                if keyword in declared and getattr(prop, attribute) is None:
                    setattr(prop, attribute, declared[keyword])
        return schema


def operation(schema: OpenAPI, method_and_path: str) -> Operation:
    """The operation ``"GET /{product_id}"`` of ``schema``; ``KeyError`` names it if absent."""
    method, _, path = method_and_path.partition(" ")
    item: PathItem | None = (schema.paths or {}).get(path)
    found = getattr(item, method.lower(), None) if item is not None else None
    if not isinstance(found, Operation):
        raise KeyError(f"{schema.info.title}: no operation {method_and_path}")
    return found


def operations(schema: OpenAPI) -> list[tuple[str, Operation]]:
    """Every ``(path, operation)`` of ``schema``."""
    return [
        (path, op)
        for path, item in (schema.paths or {}).items()
        for op in (getattr(item, m) for m in METHODS)
        if isinstance(op, Operation)
    ]


def add_links(schema: OpenAPI, links: Sequence[Link]) -> None:
    for link in links:
        source = operation(schema, link.source)
        target = operation(schema, link.target)
        response = (source.responses or {}).get(str(link.status))
        if not isinstance(response, OpenAPIResponse):
            raise KeyError(f"{schema.info.title}: {link.source} documents no {link.status}")
        response.links = {
            **(response.links or {}),
            link.name: OpenAPILink(
                operation_id=target.operation_id,
                parameters=dict(link.parameters) or None,
                request_body=link.request_body,
            ),
        }


def mark_public(schema: OpenAPI, public_paths: Sequence[str]) -> None:
    """``security: []`` on the operations the JWT check lets through (same prefix rule)."""
    patterns = [re.compile(f"^{p}") for p in public_paths]
    for path, op in operations(schema):
        if any(p.match(path) for p in patterns):
            op.security = []


def problem_for_bad_requests(schema: OpenAPI) -> None:
    if "Problem" not in (schema.components.schemas or {}):
        return  # the service documents no problem at all: nothing to point at
    problem = OpenAPIResponse(
        description="Bad Request",
        content={PROBLEM_JSON: OpenAPIMediaType(schema=Reference("#/components/schemas/Problem"))},
    )
    for _path, op in operations(schema):
        bad = (op.responses or {}).get("400")
        if isinstance(bad, OpenAPIResponse) and PROBLEM_JSON not in (bad.content or {}):
            op.responses = {**(op.responses or {}), "400": problem}


def document(schema: OpenAPI, *, public_paths: Sequence[str], links: Sequence[Link]) -> None:
    """Apply the module docstring's three additions to ``schema`` (in place)."""
    problem_for_bad_requests(schema)
    mark_public(schema, public_paths)
    add_links(schema, links)


__all__ = [
    "Link",
    "StrictStructSchemaPlugin",
    "add_links",
    "document",
    "mark_public",
    "operation",
    "problem_for_bad_requests",
]
