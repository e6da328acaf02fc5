"""The suite bites: a service built on the same chassis, broken on purpose, fails it.

Each broken app is fuzzed the way the real services are (same settings, same checks,
an admin token signed with the chassis' key code); the test passes only if schemathesis
reports the planted defect, with its reproduction.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated, Any, cast

import hypothesis
import pytest
import schemathesis
from litestar import Litestar, Response, delete, get, post, put
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, JSONBody
from msgspec import Meta, Struct
from schemathesis import Case
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.schemas import OpenApiSchema

from contracts.identities import attach_bearer
from contracts.settings import Mode, schemathesis_config
from contracts.stateful import run_stateful
from system.chassis.app import Link, ServiceParts, create_app
from system.chassis.keys import KeyFiles, key_id
from system.chassis.problems import problem_responses
from system.chassis.settings import ServiceSettings
from system.services.users.security import TokenIssuer

pytestmark = pytest.mark.contract


class Note(Struct, forbid_unknown_fields=True):
    text: Annotated[str, Meta(max_length=50)]


class Tag(Struct, forbid_unknown_fields=True):
    tag: str


class Saved(Struct):
    id: str
    text: str


NOTES: dict[str, str] = {}


@post("/notes", status_code=201, responses=problem_responses(400, 401))
async def save(data: JSONBody[Note]) -> Saved:
    note = Saved(str(uuid.uuid4()), data.text)
    NOTES[note.id] = note.text
    return note


@put("/notes/{note_id:str}/tag", responses=problem_responses(400, 401))
async def tag(note_id: FromPath[str], data: JSONBody[Tag]) -> Saved:
    number = int(data.tag)  # the planted defect: a field nobody validated, trusted to be a number
    return Saved(note_id, str(number))


@get("/notes/{note_id:str}", responses=problem_responses(401, 404))
async def read(note_id: FromPath[str]) -> Response[Saved]:
    if note_id not in NOTES:
        raise NotFoundException(detail=f"no note {note_id}")
    return Response(Saved(note_id, NOTES[note_id]))


@get("/notes/{note_id:str}/history", responses=problem_responses(401, 404))
async def history(note_id: FromPath[str]) -> Response[Saved]:
    return Response(Saved(note_id, ""), status_code=410)  # the planted defect: undocumented


@delete("/notes/{note_id:str}", status_code=204, responses=problem_responses(401, 404))
async def forget(note_id: FromPath[str]) -> None:
    """The planted defect: says it deleted, keeps the note (use after free)."""


LINKS = (
    Link("Read", "POST /notes", 201, "GET /notes/{note_id}", {"note_id": "$response.body#/id"}),
    Link(
        "Forget", "POST /notes", 201, "DELETE /notes/{note_id}", {"note_id": "$response.body#/id"}
    ),
    Link(
        "ReadForgotten",
        "DELETE /notes/{note_id}",
        204,
        "GET /notes/{note_id}",
        {"note_id": "$request.path.note_id"},
    ),
)


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> OpenApiSchema:
    folder = tmp_path_factory.mktemp("broken")
    keys = KeyFiles(folder / "jwt").ensure()
    settings = ServiceSettings(
        name="broken", data_dir=folder, log_json=False, jwt_public_key_file=keys.public
    )
    app: Litestar = create_app(
        settings, ServiceParts([save, tag, read, history, forget], links=LINKS)
    )
    issuer = TokenIssuer(
        keys.private.read_bytes(),
        key_id(keys.public.read_bytes()),
        settings.jwt_issuer,
        settings.jwt_audience,
        timedelta(minutes=10),
    )
    token = issuer.issue(user_id="bites-admin", role="admin", email="")
    schema = schemathesis.openapi.from_asgi(
        "/schema/openapi.json", app, config=schemathesis_config(Mode.IN_PROCESS)
    )
    attach_bearer(schema, lambda: token)
    return schema


def failures_of(run: object) -> str:
    """Run the planted app's cases; what schemathesis reported (empty if nothing)."""
    try:
        run()  # type: ignore[operator]
    except FailureGroup as group:
        return str(group)
    except BaseException as exc:  # hypothesis wraps several distinct failures in a group
        return f"{exc}\n" + "\n".join(str(e) for e in getattr(exc, "exceptions", ()))
    return ""


def fuzz_one(schema: OpenApiSchema, method: str, path: str, examples: int = 60) -> str:
    """Fuzz one operation of ``schema`` with the admin token; what schemathesis reported."""
    operation = schema[path][method]
    token = schema.auth.providers[0].get(None, None)  # type: ignore[arg-type]

    @hypothesis.given(case=operation.as_strategy())
    @hypothesis.settings(max_examples=examples, database=None, deadline=None)
    def fuzz(case: Case[Any]) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {token}"})

    return failures_of(fuzz)


def test_a_crashing_handler_is_a_server_error_finding_with_its_curl(broken: OpenApiSchema) -> None:
    report = fuzz_one(broken, "PUT", "/notes/{note_id}/tag")
    assert "Server error" in report, report
    assert "curl -X PUT" in report


def test_an_undocumented_status_is_a_finding(broken: OpenApiSchema) -> None:
    report = fuzz_one(broken, "GET", "/notes/{note_id}/history", examples=5)
    assert "Undocumented status code" in report, report
    assert "Received: 410" in report


def test_a_delete_that_keeps_the_resource_is_a_use_after_free_finding(
    broken: OpenApiSchema,
) -> None:
    report = failures_of(
        lambda: run_stateful(cast(OpenApiSchema, broken.exclude(path_regex="/(tag|history)$")))
    )
    assert "Deleted resource still available" in report, report
    assert "curl -X GET" in report
