"""Fixtures of the contract suite: the mode, the target, each service's schema."""

from __future__ import annotations

import pytest
from schemathesis.specs.openapi.schemas import OpenApiSchema

from contracts.counting import CALLS, summary
from contracts.identities import role_of
from contracts.settings import MODE_ENV, MODE_OPTION, Mode, contract_mode
from contracts.targets import ContractTarget, open_target, schema_for
from harness.target import TargetError
from system.runtime.topology import load_topology

SERVICES = tuple(s.name for s in load_topology().services)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        MODE_OPTION,
        choices=[m.value for m in Mode],
        default=None,
        help=f"run the contract suite in-process (default) or against the live target ({MODE_ENV})",
    )


@pytest.fixture(scope="session")
def mode(pytestconfig: pytest.Config) -> Mode:
    return contract_mode(pytestconfig.getoption(MODE_OPTION))


@pytest.fixture(scope="session")
def contract_target(
    mode: Mode, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> ContractTarget:
    """One per xdist worker: in-process, its own apps and databases; live, the harness
    plugin's ``target`` (a throw-away stack, ``--target attach`` or a deployed system).
    Live fuzzing leaves junk (random products, reservations, payments) in the target:
    run it in a session of its own (``make test-contracts-live``), not beside scenarios
    whose invariant checks look at the whole system."""
    live = request.getfixturevalue("target") if mode is Mode.LIVE else None
    try:
        return open_target(mode, tmp_path_factory.mktemp("system"), live)
    except TargetError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(params=SERVICES)
def service_schema(
    request: pytest.FixtureRequest, contract_target: ContractTarget
) -> OpenApiSchema:
    service: str = request.param
    return schema_for(contract_target, service, role_of(service))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if CALLS:
        terminalreporter.write_line(f"schemathesis requests per service: {summary()}")
