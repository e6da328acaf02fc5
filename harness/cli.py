"""``harness``: bring the local stack up and down, and see what it is doing.

Every command takes ``--stack`` and ``--port-base`` (or HARNESS_STACK / HARNESS_PORT_BASE)
so two stacks can run side by side.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click
from rich.console import Console
from rich.live import Live

from harness.console import stack_table
from system.runtime import control
from system.runtime.bootstrap import run_bootstrap
from system.runtime.components import INFRASTRUCTURE
from system.runtime.paths import StackPaths
from system.runtime.state import StackSettings
from system.runtime.topology import DATABASES, DEFAULT_TOPOLOGY_FILE, TopologyError

console = Console(stderr=True)


@dataclass(frozen=True)
class Context:
    stack: str
    port_base: int | None

    @property
    def paths(self) -> StackPaths:
        return StackPaths.for_stack(self.stack)


def _fail(message: str) -> None:
    raise click.ClickException(message)


def _parse_replicas(values: tuple[str, ...]) -> dict[str, int]:
    replicas = {}
    for value in values:
        name, sep, count = value.partition("=")
        if not sep or not count.isdigit():
            _fail(f"--replicas {value!r}: write it as SERVICE=N, e.g. --replicas products=2")
        replicas[name] = int(count)
    return replicas


@click.group()
@click.option(
    "--stack",
    envvar="HARNESS_STACK",
    default="default",
    show_default=True,
    help="Name of the stack (its state lives in .harness/stacks/NAME).",
)
@click.option(
    "--port-base",
    envvar="HARNESS_PORT_BASE",
    type=int,
    default=None,
    help="First port of the stack; every port is an offset from it.",
)
@click.pass_context
def main(ctx: click.Context, stack: str, port_base: int | None) -> None:
    """Run and inspect the reference system's local stack (no Docker, no Kubernetes)."""
    try:
        StackPaths.for_stack(stack)
    except ValueError as exc:
        _fail(str(exc))
    ctx.obj = Context(stack, port_base)


@main.command()
@click.option("--check", is_flag=True, help="Only report what is missing; install nothing.")
def bootstrap(check: bool) -> None:
    """Install Kafka, Jaeger, Toxiproxy and the Debian packages the stack needs (idempotent)."""
    sys.exit(run_bootstrap(console, check_only=check))


@main.command()
@click.option("--replicas", multiple=True, metavar="SERVICE=N", help="Replicas of a service.")
@click.option(
    "--without",
    multiple=True,
    type=click.Choice(INFRASTRUCTURE),
    help="Leave an infrastructure component out.",
)
@click.option(
    "--topology",
    "topology_file",
    type=click.Path(exists=True, dir_okay=False),
    default=str(DEFAULT_TOPOLOGY_FILE),
    show_default=True,
)
@click.option(
    "--database",
    envvar="HARNESS_DATABASE",
    type=click.Choice(DATABASES),
    default="sqlite",
    show_default=True,
    help="What the services store their data in: a SQLite file each, or a PostgreSQL "
    "server with one database each (env HARNESS_DATABASE).",
)
@click.option("--foreground", is_flag=True, help="Stay attached until Ctrl-C, then stop all.")
@click.option("--timeout", default=180.0, show_default=True, help="Seconds to wait for ready.")
@click.pass_obj
def up(
    ctx: Context,
    replicas: tuple[str, ...],
    without: tuple[str, ...],
    topology_file: str,
    database: str,
    foreground: bool,
    timeout: float,
) -> None:
    """Start the stack and wait until every process is ready."""
    settings = StackSettings(
        name=ctx.stack,
        port_base=ctx.port_base,
        replicas=_parse_replicas(replicas),
        topology_file=str(Path(topology_file).resolve()),
        without=without,
        database=database,
    )
    paths = ctx.paths
    try:
        settings.topology()
        if control.supervisor_pid(paths) is not None:
            console.print(f"stack {ctx.stack!r} is already running")
            pid = control.supervisor_pid(paths) or 0
        else:
            pid = control.start(paths, settings, detached=not foreground)
    except (TopologyError, control.StackError) as exc:
        _fail(str(exc))
    started = time.monotonic()
    title = f"stack {ctx.stack!r}"
    with Live(stack_table(None, title=title), console=console, refresh_per_second=4) as live:
        try:
            state = control.wait_ready(
                paths,
                pid,
                timeout=timeout,
                on_update=lambda s: live.update(stack_table(s, title=title)),
            )
        except control.StackError as exc:
            control.stop(paths)
            _fail(str(exc))
        live.update(stack_table(control.status(paths) or state, title=title))
    console.print(
        f"ready in {time.monotonic() - started:.1f}s; gateway "
        f"http://127.0.0.1:{state['ports']['gateway']}  jaeger "
        f"http://127.0.0.1:{state['ports']['jaeger_query']}  prometheus "
        f"http://127.0.0.1:{state['ports']['prometheus']}"
    )
    if foreground:
        console.print("attached: Ctrl-C stops the stack")
        try:
            while control.supervisor_pid(paths) is not None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            console.print("stopping…")
            control.stop(paths)
        return
    console.print(f"running in the background; stop it with `harness --stack {ctx.stack} down`")


@main.command()
@click.option(
    "--timeout",
    default=60.0,
    show_default=True,
    help="Seconds to wait for a graceful stop before SIGKILL.",
)
@click.pass_obj
def down(ctx: Context, timeout: float) -> None:
    """Stop every process of the stack gracefully (SIGTERM, then SIGKILL)."""
    was_running = control.stop(ctx.paths, timeout=timeout)
    console.print(f"stack {ctx.stack!r} " + ("stopped" if was_running else "was not running"))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable: pids, ports, health.")
@click.pass_obj
def status(ctx: Context, as_json: bool) -> None:
    """Show each process: health, pid, ports, restarts, resident memory."""
    state = control.status(ctx.paths)
    if as_json:
        click.echo(json.dumps(state or {"stack": ctx.stack, "running": False}, indent=2))
    elif state is None:
        console.print(f"stack {ctx.stack!r} is not running")
    else:
        Console().print(stack_table(state, title=f"stack {ctx.stack!r}"))
    sys.exit(0 if state is not None else 1)


@main.command()
@click.argument("name")
@click.option("-n", "--lines", default=50, show_default=True)
@click.option("-f", "--follow", is_flag=True)
@click.pass_obj
def logs(ctx: Context, name: str, lines: int, follow: bool) -> None:
    """Print the log of one process (e.g. kafka, envoy, products-1, supervisor)."""
    path = ctx.paths.supervisor_log if name == "supervisor" else ctx.paths.log_of(name)
    if not path.exists():
        known = sorted(p.stem for p in ctx.paths.logs.glob("*.log"))
        _fail(f"no log for {name!r}; known: {', '.join(known) or 'none (stack never started)'}")
    if not follow:
        click.echo(control.tail(path, lines))
        return
    tail = subprocess.Popen(["tail", "-n", str(lines), "-F", str(path)])
    try:
        tail.wait()
    except KeyboardInterrupt:
        tail.send_signal(signal.SIGTERM)
        tail.wait()


@main.command()
@click.argument("name")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for the stop.")
@click.pass_obj
def hold(ctx: Context, name: str, timeout: float) -> None:
    """Stop one process (e.g. kafka) and keep it down until `harness release NAME`."""
    try:
        control.hold(ctx.paths, name)
        control.wait_process(
            ctx.paths, name, lambda p: p["phase"] == "held", "stop", timeout=timeout
        )
    except control.StackError as exc:
        _fail(str(exc))
    console.print(f"{name} is held: stopped, and not restarted until `harness release {name}`")


@main.command()
@click.argument("name")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for ready.")
@click.pass_obj
def release(ctx: Context, name: str, timeout: float) -> None:
    """Start a held process again and wait until it is ready."""
    try:
        control.release(ctx.paths, name)
        control.wait_process(
            ctx.paths,
            name,
            lambda p: p["ready"] and not p.get("held"),
            "become ready again",
            timeout=timeout,
        )
    except control.StackError as exc:
        _fail(str(exc))
    console.print(f"{name} is released and ready")


if __name__ == "__main__":
    main()
