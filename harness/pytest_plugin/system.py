"""The system under test, once per pytest session: fixtures ``target``, ``api``, ``admin``,
``customer`` and the ``destructive`` marker's exclusion.

Which system (``--target``, or ``HARNESS_TARGET``):

* ``new`` (default when no ``HARNESS_GATEWAY_URL``): a throw-away local stack on free
  ports, brought up by the first xdist worker that needs it (the others wait on a file
  lock and attach), stopped by the controller when the session ends. Its folder is kept
  when the session failed, for the logs.
* ``attach``: the running local stack named ``HARNESS_STACK`` (``harness up``).
* ``remote``: a deployed system from ``HARNESS_GATEWAY_URL`` and friends.

Destructive tests (``@pytest.mark.destructive``) take an exclusive lock on the shared
target, every other test that uses it a shared one: a fault never lands in the middle of
another test, while non-destructive tests still run in parallel (``pytest -n auto``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import filelock
import pytest

from harness.client import Api, connect
from harness.client import admin as login_admin
from harness.localstack import free_port_base
from harness.target import Target, TargetError, check_reachable, local_target, resolve
from system.runtime import control
from system.runtime.paths import StackPaths
from system.runtime.state import StackSettings, read_state
from system.runtime.topology import DEFAULT_TOPOLOGY_FILE

SESSION_DIR = "HARNESS_SESSION_DIR"
MODES = ("new", "attach", "remote")
STACK_NAME = "session"
# What a test stack changes from the default topology: a crashed replica's sagas are
# taken over after 2 s instead of 15, and a failing saga step gives up after 6 s.
TEST_STACK_ENV = {"orders": {"ORDERS_LEASE_S": "2", "ORDERS_STEP_TIMEOUT_S": "6"}}
_OWNER = pytest.StashKey[Path]()
_FAILED = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "the system under test")
    group.addoption(
        "--target",
        dest="harness_target",
        choices=MODES,
        default=None,
        help="new: a throw-away local stack (default); attach: the running local stack "
        "HARNESS_STACK; remote: HARNESS_GATEWAY_URL... (default: remote if that is set)",
    )
    group.addoption(
        "--harness-database",
        default=os.environ.get("HARNESS_DATABASE", "sqlite"),
        choices=("sqlite", "postgres"),
        help="database of a new stack's services (HARNESS_DATABASE)",
    )
    group.addoption(
        "--harness-topology",
        default=str(DEFAULT_TOPOLOGY_FILE),
        help="topology file of a new stack",
    )


def pytest_configure(config: pytest.Config) -> None:
    """The controller makes the folder the whole session (all workers) shares."""
    if hasattr(config, "workerinput") or os.environ.get(SESSION_DIR):
        return
    folder = Path(tempfile.mkdtemp(prefix="harness-session-"))
    os.environ[SESSION_DIR] = str(folder)  # xdist workers inherit it
    config.stash[_OWNER] = folder


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = config.stash.get(_OWNER, None)
    if folder is None:
        return
    os.environ.pop(SESSION_DIR, None)
    paths = StackPaths.for_stack(STACK_NAME, folder)
    started = (folder / "started").exists()
    if started:
        control.stop(paths)
    failed = config.stash.get(_FAILED, False)
    if failed and started:
        print(f"\nharness: the session stack's logs are kept in {paths.logs}")
    else:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_FAILED] = exitstatus not in (0, 5)


def _mode(config: pytest.Config) -> str:
    chosen = config.getoption("harness_target") or os.environ.get("HARNESS_TARGET")
    if chosen is None:
        return "remote" if os.environ.get("HARNESS_GATEWAY_URL") else "new"
    if chosen not in MODES:
        raise pytest.UsageError(f"HARNESS_TARGET={chosen!r}: choose one of {', '.join(MODES)}")
    return str(chosen)


def _session_stack(config: pytest.Config) -> Target:
    """Start the session's stack, or attach to it if another worker did."""
    folder = Path(os.environ[SESSION_DIR])
    paths = StackPaths.for_stack(STACK_NAME, folder)
    with filelock.FileLock(folder / "start.lock", timeout=600):
        failure = folder / "failed"
        if failure.exists():
            raise TargetError(failure.read_text())
        if (folder / "ready").exists():
            state = read_state(paths)
            if state is None:
                raise TargetError("the session stack stopped; see " + str(paths.logs))
            return local_target(paths, state)
        settings = StackSettings(
            name=STACK_NAME,
            topology_file=config.getoption("harness_topology"),
            database=config.getoption("harness_database"),
            env=TEST_STACK_ENV,
        )
        settings = StackSettings(**{**settings.__dict__, "port_base": free_port_base(settings)})
        (folder / "started").write_text(json.dumps(settings.__dict__, default=str))
        try:
            pid = control.start(paths, settings)
            state = control.wait_ready(paths, pid, timeout=240)
        except Exception as exc:
            failure.write_text(f"the session stack did not come up: {exc}")
            raise TargetError(failure.read_text()) from exc
        (folder / "ready").write_text(str(state["port_base"]))
        return local_target(paths, state)


@pytest.fixture(scope="session")
def target(pytestconfig: pytest.Config) -> Target:
    """The system under test (see the module docstring for which one)."""
    mode = _mode(pytestconfig)
    try:
        if mode == "new":
            chosen = _session_stack(pytestconfig)
        else:
            env = dict(os.environ)
            if mode == "attach":
                env.pop("HARNESS_GATEWAY_URL", None)
            chosen = resolve(env)
        check_reachable(chosen)
    except TargetError as exc:
        pytest.fail(str(exc), pytrace=False)
    return chosen


@contextlib.contextmanager
def _flock(path: Path, mode: int) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(autouse=True)
def _target_exclusion(request: pytest.FixtureRequest) -> Iterator[None]:
    """Readers/writer lock on the shared target across xdist workers. A destructive test
    first holds the turnstile, so new readers queue behind it instead of starving it."""
    if "target" not in request.fixturenames or SESSION_DIR not in os.environ:
        yield
        return
    folder = Path(os.environ[SESSION_DIR])
    turnstile, room = folder / "turnstile.lock", folder / "room.lock"
    if request.node.get_closest_marker("destructive"):
        with _flock(turnstile, fcntl.LOCK_EX), _flock(room, fcntl.LOCK_EX):
            yield
        return
    with _flock(turnstile, fcntl.LOCK_EX):
        pass
    with _flock(room, fcntl.LOCK_SH):
        yield


@pytest.fixture
async def api(target: Target) -> AsyncIterator[Api]:
    """An anonymous client of the target's gateway."""
    async with connect(target) as anonymous:
        yield anonymous


@pytest.fixture
async def admin(api: Api, target: Target) -> Api:
    """The target's seeded admin."""
    try:
        return await login_admin(api, target)
    except TargetError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
async def customer(api: Api) -> Api:
    """A freshly registered customer, logged in."""
    return await api.new_customer()
