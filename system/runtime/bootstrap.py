"""Bootstrap, second half: install the stack's real components, idempotently.

Each :class:`Step` knows whether it is done (a cached, versioned result exists) and how to
do itself; results are built in a ``.partial`` folder and renamed into place, so an
interrupted bootstrap leaves nothing half-installed. Steps whose toolchain is missing
are reported in one line, naming what still works without them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from system.runtime import tools
from system.runtime.paths import cache_root

# Debian packages: program to look for -> package that provides it.
DEBIAN_PACKAGES = {
    "prometheus": "prometheus",
    "redis-server": "redis-server",
    "postgres": "postgresql",  # initdb and postgres, off the PATH (tools.postgres_bin_dir)
    "java": "openjdk-17-jre-headless",
    "mvn": "maven",
    "wrk": "wrk",  # the HTTP benchmarks' load generator
}


class StepFailed(RuntimeError):
    def __init__(self, command: list[str], log: Path, tail: str) -> None:
        super().__init__(f"`{' '.join(command)}` failed (full log: {log}):\n{tail}")


@dataclass(frozen=True)
class Step:
    title: str
    done: Callable[[], bool]
    run: Callable[[], None]
    needs: tuple[str, ...] = ()
    """Programs this step runs; if one is missing the step is skipped with a message."""
    without_it: str = ""
    """What still works when this step cannot run."""


def _have(program: str) -> bool:
    if program == "postgres":
        try:
            tools.postgres_bin_dir()
        except tools.ToolMissing:
            return False
        return True
    return shutil.which(program) is not None


def _run(
    command: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None, log_name: str
) -> None:
    log = cache_root() / "logs" / f"{log_name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        result = subprocess.run(
            command,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
            env={**os.environ, **(env or {})},
        )
    if result.returncode != 0:
        lines = log.read_text(errors="replace").splitlines()[-12:]
        raise StepFailed(command, log, "\n".join(lines))


def _install_into(final: Path, build: Callable[[Path], None]) -> None:
    """Build into ``final.partial`` and rename, so ``final`` is whole or absent."""
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        build(partial)
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _missing_debian() -> list[str]:
    return sorted({pkg for program, pkg in DEBIAN_PACKAGES.items() if not _have(program)})


def _apt_install() -> None:
    packages = _missing_debian()
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-q"], env=env, log_name="apt-update")
    _run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
        env=env,
        log_name="apt-install",
    )


def _fetch_kafka(dest: Path) -> None:
    _run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(tools.KAFKA_POM),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={dest / 'libs'}",
        ],
        log_name="kafka",
    )


def _build_go_tool(tool: tools.GoTool) -> Callable[[], None]:
    def run() -> None:
        def build(dest: Path) -> None:
            _run(
                [
                    "go",
                    "build",
                    "-trimpath",
                    "-ldflags=-s -w",
                    "-o",
                    str(dest / tool.name),
                    tool.package,
                ],
                cwd=tools.GO_TOOLS_DIR,
                env={"GOFLAGS": "-mod=readonly"},
                log_name=tool.name,
            )

        _install_into(tool.binary.parent, build)

    return run


def steps() -> list[Step]:
    can_apt = shutil.which("apt-get") is not None and os.geteuid() == 0
    return [
        Step(
            "Debian packages (Prometheus, PostgreSQL, Redis, Java, Maven, wrk)",
            done=lambda: not _missing_debian(),
            run=_apt_install,
            needs=() if can_apt else ("apt-get (as root)",),
            without_it="install them by hand; the stack runs without Prometheus "
            "(`harness up --without prometheus`)",
        ),
        Step(
            f"Apache Kafka {tools.kafka_version()} jars",
            done=lambda: tools.kafka_libs().is_dir(),
            run=lambda: _install_into(tools.kafka_home(), _fetch_kafka),
            needs=("mvn", "java"),
            without_it="the rest of the stack runs with `harness up --without kafka`",
        ),
        *(
            Step(
                f"{tool.name} {tool.version} (Go build, several minutes the first time)",
                done=lambda tool=tool: tool.binary.exists(),  # type: ignore[misc]
                run=_build_go_tool(tool),
                needs=("go",),
                without_it=f"the rest runs with `harness up --without {tool.name.split('-')[0]}`",
            )
            for tool in tools.GO_TOOLS
        ),
    ]


def run_bootstrap(console: Console, *, check_only: bool = False) -> int:
    """Run every step that is not done; returns a process exit code."""
    started = time.monotonic()
    todo: list[Step] = []
    for step in steps():
        if step.done():
            console.print(f"[green]✓[/] {step.title}")
        elif missing := [n for n in step.needs if not _have(n.split(" ")[0])]:
            console.print(
                f"[yellow]![/] {step.title}: needs {', '.join(missing)}, which is "
                f"missing; {step.without_it}"
            )
        else:
            todo.append(step)
    if check_only:
        for step in todo:
            console.print(f"[yellow]…[/] {step.title}: not installed")
        return 1 if todo else 0
    failed = _run_steps(console, todo)
    console.print(
        f"bootstrap finished in {time.monotonic() - started:.1f}s"
        + (f", {failed} step(s) failed" if failed else "")
    )
    return 1 if failed else 0


def _run_steps(console: Console, todo: list[Step]) -> int:
    """Debian packages first (others may need Java or Maven), then the rest in parallel."""
    failed = 0
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:

        def execute(step: Step) -> None:
            nonlocal failed
            task = progress.add_task(step.title, total=1)
            try:
                step.run()
            except (StepFailed, OSError) as exc:
                failed += 1
                progress.update(task, description=f"[red]✗[/] {step.title}")
                console.print(f"[red]{step.title} failed:[/] {exc}")
            else:
                progress.update(task, description=f"[green]✓[/] {step.title}", completed=1)

        first = [s for s in todo if s.title.startswith("Debian")]
        for step in first:
            execute(step)
        with ThreadPoolExecutor(max_workers=3) as pool:
            list(pool.map(execute, [s for s in todo if s not in first]))
    return failed
