"""What the chassis adds to a service's OpenAPI document: links, public operations, and
400 answers documented as the problems they are."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pytest
from litestar import get, patch, post
from litestar.params import FromPath, JSONBody
from msgspec import UNSET, Meta, Struct, UnsetType

from system.chassis.app import Link, ServiceParts, create_app
from system.chassis.keys import KeyFiles
from system.chassis.problems import problem_responses
from system.chassis.settings import ServiceSettings


class Thing(Struct):
    id: str


class Change(Struct, forbid_unknown_fields=True):
    count: Annotated[int, Meta(ge=0, le=10)] | UnsetType = UNSET


@post("/things", status_code=201, responses=problem_responses(400, 401))
async def make() -> Thing:
    return Thing("t-1")


@patch("/things/{thing_id:str}", responses=problem_responses(400, 401))
async def change(thing_id: FromPath[str], data: JSONBody[Change]) -> Thing:
    return Thing(thing_id)


@get("/things/{thing_id:str}", responses=problem_responses(401, 404))
async def read(thing_id: FromPath[str]) -> Thing:
    return Thing(thing_id)


@get("/open/hello")
async def hello() -> str:
    return "hi"


def schema_of(tmp_path: Path, *links: Link) -> dict[str, Any]:
    keys = KeyFiles(tmp_path / "jwt").ensure()
    settings = ServiceSettings(
        name="things", data_dir=tmp_path, log_json=False, jwt_public_key_file=keys.public
    )
    parts = ServiceParts([make, read, change, hello], public_paths=("/open",), links=links)
    schema: dict[str, Any] = create_app(settings, parts).openapi_schema.to_schema()
    return schema


def test_a_link_names_its_target_operation_and_parameters(tmp_path: Path) -> None:
    link = Link(
        "Read", "POST /things", 201, "GET /things/{thing_id}", {"thing_id": "$response.body#/id"}
    )
    paths = schema_of(tmp_path, link)["paths"]
    declared = paths["/things"]["post"]["responses"]["201"]["links"]["Read"]
    assert declared == {
        "operationId": paths["/things/{thing_id}"]["get"]["operationId"],
        "parameters": {"thing_id": "$response.body#/id"},
    }


@pytest.mark.parametrize(
    ("link", "message"),
    [
        (Link("X", "POST /nowhere", 201, "GET /things/{thing_id}"), "no operation POST /nowhere"),
        (Link("X", "POST /things", 200, "GET /things/{thing_id}"), "documents no 200"),
    ],
)
def test_a_link_to_nothing_fails_the_build(tmp_path: Path, link: Link, message: str) -> None:
    with pytest.raises(KeyError, match=message):
        schema_of(tmp_path, link)


def test_public_operations_need_no_token_and_the_others_do(tmp_path: Path) -> None:
    schema = schema_of(tmp_path)
    assert schema["security"] == [{"BearerToken": []}]
    assert schema["paths"]["/open/hello"]["get"]["security"] == []
    assert "security" not in schema["paths"]["/things"]["post"]


def test_every_documented_400_is_a_problem(tmp_path: Path) -> None:
    paths = schema_of(tmp_path)["paths"]
    for path, method in (("/things", "post"), ("/things/{thing_id}", "get")):
        assert list(paths[path][method]["responses"]["400"]["content"]) == [
            "application/problem+json"
        ], path


def test_a_strict_request_body_is_documented_as_strictly_as_it_is_decoded(tmp_path: Path) -> None:
    """``forbid_unknown_fields`` → ``additionalProperties: false``; a zero bound on an
    optional field (which Litestar drops) comes back from msgspec's schema."""
    schema = schema_of(tmp_path)
    change = schema["components"]["schemas"]["Change"]
    assert change["additionalProperties"] is False
    assert change["properties"]["count"]["minimum"] == 0
    assert "additionalProperties" not in schema["components"]["schemas"]["Thing"]
