"""The supervisor with real (tiny) processes: order, readiness, restarts, shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from system.runtime import control
from system.runtime.control import read_holds
from system.runtime.paths import StackPaths
from system.runtime.process import ProcessSpec, http_probe
from system.runtime.supervisor import Backoff, Supervisor, SupervisorError, stop_layers

FAST = Backoff(initial=0.05, factor=2.0, maximum=0.2, stable_after=5.0)


def python(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", code)


def marker_probe(path: Path) -> Callable[[], asyncio.Future[bool]]:
    async def probe() -> bool:
        return path.exists()

    return probe  # type: ignore[return-value]


async def until(condition: Callable[[], bool], description: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {description}")
        await asyncio.sleep(0.02)


async def running(supervisor: Supervisor) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(supervisor.run())
    try:
        yield task
    finally:
        supervisor.request_stop()
        await asyncio.wait_for(task, 30)


def state(supervisor: Supervisor, name: str) -> dict:
    return next(s for s in supervisor.snapshot() if s["name"] == name)


SLEEPER = python("import time; time.sleep(60)")


def test_backoff_doubles_up_to_its_maximum() -> None:
    backoff = Backoff(initial=0.5, factor=2.0, maximum=3.0)
    assert [backoff.delay(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_stop_layers_put_dependents_first_to_stop() -> None:
    specs = [
        ProcessSpec("svc", SLEEPER, after=("kafka", "jaeger")),
        ProcessSpec("kafka", SLEEPER, after=("toxiproxy",)),
        ProcessSpec("toxiproxy", SLEEPER),
        ProcessSpec("jaeger", SLEEPER),
    ]
    assert stop_layers(specs) == [["toxiproxy", "jaeger"], ["kafka"], ["svc"]]


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (
            [ProcessSpec("a", SLEEPER, after=("b",)), ProcessSpec("b", SLEEPER, after=("a",))],
            "dependency cycle",
        ),
        ([ProcessSpec("a", SLEEPER, after=("ghost",))], "unknown process 'ghost'"),
        ([ProcessSpec("a", SLEEPER), ProcessSpec("a", SLEEPER)], "unique"),
    ],
)
def test_inconsistent_process_lists_are_refused(specs: list[ProcessSpec], message: str) -> None:
    with pytest.raises(SupervisorError, match=message):
        stop_layers(specs)


@pytest.mark.asyncio
async def test_a_process_starts_only_after_its_dependency_is_ready(tmp_path: Path) -> None:
    ready_marker = tmp_path / "base-ready"
    started_log = tmp_path / "started"
    base = ProcessSpec(
        "base",
        python(
            f"import time,pathlib; time.sleep(0.3); pathlib.Path({str(ready_marker)!r})"
            ".touch(); time.sleep(60)"
        ),
        probe=marker_probe(ready_marker),
    )
    dependent = ProcessSpec(
        "dependent",
        python(
            f"import os,time,pathlib; pathlib.Path({str(started_log)!r}).write_text("
            f"str(os.path.exists({str(ready_marker)!r}))); time.sleep(60)"
        ),
        after=("base",),
        probe=marker_probe(started_log),
    )
    supervisor = Supervisor([base, dependent], tmp_path / "logs", backoff=FAST, probe_interval=0.02)
    async for _ in running(supervisor):
        await until(lambda: supervisor.all_ready, "both ready")
        assert started_log.read_text() == "True"


@pytest.mark.asyncio
async def test_a_crashing_process_is_restarted_with_backoff(tmp_path: Path) -> None:
    crasher = ProcessSpec("crasher", python("import sys; sys.exit(3)"))
    supervisor = Supervisor([crasher], tmp_path / "logs", backoff=FAST, probe_interval=0.02)
    async for _ in running(supervisor):
        await until(lambda: state(supervisor, "crasher")["restarts"] >= 3, "three restarts")
        entry = state(supervisor, "crasher")
        assert entry["last_exit"] == 3
        assert entry["streak"] >= 3
    log = (tmp_path / "logs" / "crasher.log").read_text()
    assert log.count("=== ") >= 3, "each start is marked in the process log"


@pytest.mark.asyncio
async def test_a_killed_process_comes_back_with_a_new_pid(tmp_path: Path) -> None:
    supervisor = Supervisor(
        [ProcessSpec("pod", SLEEPER)], tmp_path / "logs", backoff=FAST, probe_interval=0.02
    )
    async for _ in running(supervisor):
        await until(lambda: state(supervisor, "pod")["ready"], "pod ready")
        first = state(supervisor, "pod")["pid"]
        os.kill(first, signal.SIGKILL)
        await until(
            lambda first=first: state(supervisor, "pod")["pid"] not in (None, first), "a new pid"
        )
        assert state(supervisor, "pod")["restarts"] == 1
        assert state(supervisor, "pod")["last_exit"] == -signal.SIGKILL
        await until(lambda: state(supervisor, "pod")["ready"], "pod ready again")


@pytest.mark.asyncio
async def test_shutdown_kills_what_ignores_sigterm_after_the_grace(tmp_path: Path) -> None:
    stubborn = ProcessSpec(
        "stubborn",
        python(
            "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('armed', flush=True); time.sleep(60)"
        ),
        stop_grace=0.5,
    )
    polite = ProcessSpec("polite", SLEEPER)
    supervisor = Supervisor([stubborn, polite], tmp_path / "logs", probe_interval=0.02)
    log = tmp_path / "logs" / "stubborn.log"
    pids: list[int] = []
    async for _ in running(supervisor):
        await until(lambda: supervisor.all_ready and "\narmed" in log.read_text(), "armed")
        pids = [s["pid"] for s in supervisor.snapshot()]
        began = time.monotonic()
    elapsed = time.monotonic() - began
    assert 0.4 < elapsed < 5, f"shutdown took {elapsed:.2f}s"
    assert not any(psutil.pid_exists(pid) for pid in pids)
    assert {s["phase"] for s in supervisor.snapshot()} == {"stopped"}
    assert state(supervisor, "stubborn")["last_exit"] == -signal.SIGKILL
    assert state(supervisor, "polite")["last_exit"] == -signal.SIGTERM


@pytest.mark.asyncio
async def test_shutdown_stops_dependents_before_their_dependencies(tmp_path: Path) -> None:
    order = tmp_path / "order"

    def recorder(name: str) -> tuple[str, ...]:
        return python(
            "import signal,sys,time\n"
            f"def bye(*_):\n  open({str(order)!r},'a').write({name!r}+'\\n'); sys.exit(0)\n"
            "signal.signal(signal.SIGTERM, bye)\n"
            f"open({str(tmp_path / name)!r}, 'w').close()\n"
            "while True: time.sleep(0.01)\n"
        )

    specs = [
        ProcessSpec("db", recorder("db"), probe=marker_probe(tmp_path / "db")),
        ProcessSpec("api", recorder("api"), after=("db",), probe=marker_probe(tmp_path / "api")),
        ProcessSpec(
            "edge", recorder("edge"), after=("api",), probe=marker_probe(tmp_path / "edge")
        ),
    ]
    supervisor = Supervisor(specs, tmp_path / "logs", probe_interval=0.02)
    async for _ in running(supervisor):
        await until(lambda: supervisor.all_ready, "all ready")
    assert order.read_text().split() == ["edge", "api", "db"]


@pytest.mark.asyncio
async def test_a_failing_prepare_counts_as_a_crash_and_is_retried(tmp_path: Path) -> None:
    attempts: list[int] = []

    async def prepare() -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError("storage not formatted yet")

    spec = ProcessSpec("kafkaish", SLEEPER, prepare=prepare)
    supervisor = Supervisor([spec], tmp_path / "logs", backoff=FAST, probe_interval=0.02)
    async for _ in running(supervisor):
        await until(lambda: state(supervisor, "kafkaish")["ready"], "ready after retries")
    assert len(attempts) == 3
    assert state(supervisor, "kafkaish")["restarts"] == 2


@pytest.mark.asyncio
async def test_every_change_is_published(tmp_path: Path) -> None:
    seen: list[bool] = []
    supervisor = Supervisor(
        [ProcessSpec("pod", SLEEPER)],
        tmp_path / "logs",
        probe_interval=0.02,
        on_change=lambda s: seen.append(s.all_ready),
    )
    async for _ in running(supervisor):
        await until(lambda: supervisor.all_ready, "ready")
    assert seen[-1] is False
    assert True in seen


@pytest.mark.asyncio
async def test_a_held_process_is_stopped_gracefully_and_not_restarted(tmp_path: Path) -> None:
    base = ProcessSpec("broker", SLEEPER)
    dependent = ProcessSpec("svc", SLEEPER, after=("broker",))
    supervisor = Supervisor([base, dependent], tmp_path / "logs", backoff=FAST, probe_interval=0.02)
    async for _ in running(supervisor):
        await until(lambda: supervisor.all_ready, "both ready")
        broker_pid, svc_pid = state(supervisor, "broker")["pid"], state(supervisor, "svc")["pid"]
        supervisor.hold("broker")
        await until(lambda: state(supervisor, "broker")["phase"] == "held", "broker held")
        assert not psutil.pid_exists(broker_pid) or psutil.Process(broker_pid).status() == "zombie"
        await asyncio.sleep(0.3)  # several backoff periods: a crash would have restarted it
        held = state(supervisor, "broker")
        assert (held["held"], held["ready"], held["pid"]) == (True, False, None)
        assert held["restarts"] == 0, "a hold is not a crash"
        assert held["last_exit"] == -signal.SIGTERM, "stopped gracefully"
        assert state(supervisor, "svc")["pid"] == svc_pid, "dependents keep running"
        assert not supervisor.all_ready

        supervisor.release("broker")
        await until(lambda: state(supervisor, "broker")["ready"], "broker ready after release")
        released = state(supervisor, "broker")
        assert released["held"] is False
        assert released["pid"] not in (None, broker_pid)
        await until(lambda: supervisor.all_ready, "all ready again")


@pytest.mark.asyncio
async def test_sync_holds_applies_a_set_of_names_and_ignores_unknown_ones(tmp_path: Path) -> None:
    supervisor = Supervisor(
        [ProcessSpec("a", SLEEPER), ProcessSpec("b", SLEEPER)],
        tmp_path / "logs",
        backoff=FAST,
        probe_interval=0.02,
    )
    async for _ in running(supervisor):
        await until(lambda: supervisor.all_ready, "ready")
        supervisor.sync_holds({"a", "ghost"})
        await until(lambda: state(supervisor, "a")["phase"] == "held", "a held")
        assert state(supervisor, "b")["ready"]
        supervisor.sync_holds(set())
        await until(lambda: state(supervisor, "a")["ready"], "a ready after release")
    with pytest.raises(SupervisorError, match="no process 'ghost'"):
        supervisor.hold("ghost")


@pytest.mark.asyncio
async def test_a_held_process_that_ignores_sigterm_is_killed_after_its_grace(
    tmp_path: Path,
) -> None:
    stubborn = ProcessSpec(
        "stubborn",
        python(
            "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('armed', flush=True); time.sleep(60)"
        ),
        stop_grace=0.3,
    )
    supervisor = Supervisor([stubborn], tmp_path / "logs", backoff=FAST, probe_interval=0.02)
    log = tmp_path / "logs" / "stubborn.log"
    async for _ in running(supervisor):
        await until(lambda: supervisor.all_ready and "\narmed" in log.read_text(), "armed")
        supervisor.hold("stubborn")
        await until(lambda: state(supervisor, "stubborn")["phase"] == "held", "held")
        assert state(supervisor, "stubborn")["last_exit"] == -signal.SIGKILL


@pytest.mark.asyncio
async def test_a_process_held_before_it_starts_waits_for_its_release(tmp_path: Path) -> None:
    supervisor = Supervisor([ProcessSpec("pod", SLEEPER)], tmp_path / "logs", probe_interval=0.02)
    supervisor.hold("pod")
    async for _ in running(supervisor):
        await until(lambda: state(supervisor, "pod")["phase"] == "held", "held at start")
        await asyncio.sleep(0.1)
        assert state(supervisor, "pod")["pid"] is None
        supervisor.release("pod")
        await until(lambda: state(supervisor, "pod")["ready"], "ready after release")
    assert state(supervisor, "pod")["phase"] == "stopped"


def test_the_holds_folder_is_read_by_name_and_cleared_with_the_stack(tmp_path: Path) -> None:
    paths = StackPaths(tmp_path / "stack")
    assert read_holds(paths) == set()
    paths.holds.mkdir(parents=True)
    (paths.holds / "kafka").touch()
    (paths.holds / ".kafka.tmp").touch()
    assert read_holds(paths) == {"kafka"}
    control.stop(paths)  # not running: still leaves no state, lock or hold behind
    assert read_holds(paths) == set()


def test_a_launcher_that_exits_before_its_supervisor_leaves_no_warning(tmp_path: Path) -> None:
    """The pytest worker that started the session's stack exits while the stack runs: its
    handle on the supervisor must go quietly, even under ``-W error``."""
    pid_file = tmp_path / "pid"
    launcher = (
        "import subprocess, sys\n"
        "from system.runtime import control\n"
        "proc = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'],\n"
        "                        start_new_session=True, stdin=subprocess.DEVNULL,\n"
        "                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "control._launched[proc.pid] = proc\n"
        f"with open({str(pid_file)!r}, 'w') as out:\n"
        "    out.write(str(proc.pid))\n"
        "del proc\n"
    )
    done = psutil.Popen(
        [sys.executable, "-W", "error", "-c", launcher],
        cwd=Path(control.__file__).parents[2],
        stderr=-1,
    )
    try:
        _, stderr = done.communicate(timeout=30)
        assert done.returncode == 0, stderr
        assert b"still running" not in stderr, stderr.decode()
        assert stderr == b""
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


@pytest.mark.asyncio
async def test_an_http_probe_answers_without_building_a_tls_context_each_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A probe runs every 2 s per process for the stack's whole life: a TLS context per
    call (httpx's default, 23 ms of CPU loading the CA bundle) was most of the
    supervisor's CPU."""
    built: list[int] = []
    original = ssl.create_default_context

    def counted(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        built.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counted)
    answers = iter((b"503 Service Unavailable", b"200 OK", b"200 OK", b"200 OK"))

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 " + next(answers) + b"\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        probe = http_probe(f"http://127.0.0.1:{port}/health")
        assert [await probe() for _ in range(4)] == [False, True, True, True]
    assert len(built) <= 1
