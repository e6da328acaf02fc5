"""The ``harness`` CLI's life cycle on real processes: up, restart a killed process,
two stacks side by side, a clear refusal on busy ports, and a down that leaves nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from harness.localstack import free_port_base
from system.runtime.state import StackSettings
from tests.conftest import poll_until
from tests.integration.conftest import write_topology

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("lifecycle")]


class Cli:
    def __init__(self, home: Path, topology: Path) -> None:
        self.env = {**os.environ, "HARNESS_HOME": str(home)}
        self.topology = topology
        self.started: set[str] = set()
        """Stacks an ``up`` was attempted for: the fixture downs them whatever happens."""

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        if "up" in args:
            self.started.update(
                a.removeprefix("--stack=") for a in args if a.startswith("--stack=")
            )
        result = subprocess.run(
            [sys.executable, "-m", "harness.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        if check and result.returncode != 0:
            pytest.fail(f"harness {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result

    def status(self, stack: str) -> dict[str, Any]:
        return json.loads(self(f"--stack={stack}", "status", "--json", check=False).stdout)


def pids_of(state: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["pid"] for p in state["processes"]}


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    runner = Cli(tmp_path / "home", write_topology(tmp_path))
    yield runner
    for stack in runner.started:
        runner(f"--stack={stack}", "down", check=False)


def test_up_restart_side_by_side_and_down(cli: Cli) -> None:
    settings = StackSettings(topology_file=str(cli.topology))
    base_a = free_port_base(settings)
    base_b = free_port_base(settings, exclude={base_a})
    up_a = ("--stack=a", f"--port-base={base_a}", "up", f"--topology={cli.topology}")
    cli(*up_a)
    cli(
        "--stack=b",
        f"--port-base={base_b}",
        "up",
        f"--topology={cli.topology}",
        "--without=kafka",
        "--without=prometheus",
    )
    a, b = cli.status("a"), cli.status("b")
    everything = [
        a["supervisor_pid"],
        *pids_of(a).values(),
        b["supervisor_pid"],
        *pids_of(b).values(),
    ]
    try:
        assert "kafka" not in pids_of(b)
        for state in (a, b):
            echo = httpx.get(f"http://127.0.0.1:{state['ports']['gateway']}/api/v1/beta/").json()
            assert echo["replica"] == "beta-1"

        # a killed process (like a deleted pod) comes back, and so does its readiness
        victims = ("envoy", "alpha-2")
        for name in victims:
            os.kill(pids_of(a)[name], signal.SIGKILL)

        def restarted() -> dict[str, Any] | None:
            state = cli.status("a")
            procs = {p["name"]: p for p in state["processes"]}
            ok = all(procs[n]["restarts"] == 1 and procs[n]["ready"] for n in victims)
            return state if ok and state["all_ready"] else None

        after = poll_until(restarted, "envoy and alpha-2 restarted and ready", timeout=30)
        everything += list(pids_of(after).values())
        assert all(pids_of(after)[n] != pids_of(a)[n] for n in victims)

        # the same ports cannot be taken twice: one clear line, nothing started
        clash = cli(
            "--stack=c", f"--port-base={base_a}", "up", f"--topology={cli.topology}", check=False
        )
        assert clash.returncode == 1
        assert "are in use" in clash.stderr
        assert "--port-base" in clash.stderr
    finally:
        down_a = cli("--stack=a", "down")
        cli("--stack=b", "down")
    assert "stopped" in down_a.stderr
    poll_until(
        lambda: (
            not any(
                psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in everything
            )
        ),
        "every process of both stacks gone",
        timeout=15,
    )
    for stack in ("a", "b"):
        root = Path(cli.env["HARNESS_HOME"]) / "stacks" / stack
        assert not (root / "state.json").exists()
        assert not (root / "supervisor.lock").exists()
        assert cli(f"--stack={stack}", "status", check=False).returncode == 1


def test_a_killed_supervisor_takes_its_children_with_it(cli: Cli) -> None:
    base = free_port_base(StackSettings(topology_file=str(cli.topology)))
    cli(
        "--stack=orphans",
        f"--port-base={base}",
        "up",
        f"--topology={cli.topology}",
        "--without=kafka",
        "--without=prometheus",
        "--without=jaeger",
    )
    state = cli.status("orphans")
    children = list(pids_of(state).values())
    os.kill(state["supervisor_pid"], signal.SIGKILL)
    poll_until(
        lambda: (
            not any(
                psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in children
            )
        ),
        "children gone with their supervisor",
        timeout=20,
    )
    down = cli("--stack=orphans", "down")
    assert "was not running" in down.stderr
    assert not (Path(cli.env["HARNESS_HOME"]) / "stacks" / "orphans" / "state.json").exists()


def test_bad_input_gets_one_clear_line(cli: Cli) -> None:
    bad_replicas = cli("up", "--replicas", "alpha", f"--topology={cli.topology}", check=False)
    assert bad_replicas.returncode == 2 or "SERVICE=N" in bad_replicas.stderr
    assert "SERVICE=N" in bad_replicas.stderr
    bad_stack = cli("--stack=Not Valid", "status", check=False)
    assert "stack name" in bad_stack.stderr
    unknown = cli("up", "--replicas", "ghost=2", f"--topology={cli.topology}", check=False)
    assert "no service named 'ghost'" in unknown.stderr
    no_log = cli("--stack=never", "logs", "kafka", check=False)
    assert "no log for 'kafka'" in no_log.stderr
