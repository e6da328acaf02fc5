"""Server CPU per request: the chassis' server (uvicorn + httptools) against granian.

    .venv/bin/python -m benchmarks.server_cost [--seconds 6] [--connections 1,4,16]

Serves one small Litestar app (``POST /echo``: a JSON body in, the same body out) in a
process of its own, first by ``system.chassis.serve.server`` (what every service runs),
then by granian's embedded server (what the services ran before), on uvloop both. wrk
drives each with ``--connections`` concurrent keep-alive connections in turn; the
server process's CPU time over each run, divided by the requests, is the figure. A
service sees few concurrent requests (the order path's calls come one at a time from
Envoy's pool), which is where the two differ most.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import uvloop
from litestar import Litestar, post

from benchmarks.catalog_read import wrk
from harness.localstack import free_port

BODY = (
    '{"user_id":"01a22b67-17d3-70b2-85e4-3a9eef6f7e62",'
    '"lines":[{"product_id":"01a22b67-1855-710d-96ca-d2a9762cb09e","quantity":1}],'
    '"amount_cents":999}'
)
SCRIPT = f"""
wrk.method = "POST"
wrk.body = '{BODY}'
wrk.headers["Content-Type"] = "application/json"
"""


@post("/echo", status_code=200)
async def echo(data: dict[str, object]) -> dict[str, object]:
    return data


def app() -> Litestar:
    return Litestar([echo])


def run_server(kind: str, port: int) -> None:
    """The served process: ``kind`` is ``chassis`` or ``granian``."""
    if kind == "chassis":
        from system.chassis.serve import server  # noqa: PLC0415
        from system.chassis.settings import ServiceSettings  # noqa: PLC0415

        running = server(app(), ServiceSettings(name="bench", port=port))
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(running.serve())
        return
    from granian.constants import HTTPModes, Interfaces  # noqa: PLC0415
    from granian.server.embed import Server  # noqa: PLC0415

    embedded = Server(
        app(),
        address="127.0.0.1",
        port=port,
        interface=Interfaces.ASGI,
        http=HTTPModes.http1,
        websockets=False,
        log_access=False,
    )
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(embedded.serve())


def measure(kind: str, connections: list[int], seconds: int, script: Path) -> dict[int, dict]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.server_cost", "--serve", kind, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/echo"
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.post(url, json={}, timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"the {kind} server did not start on port {port}") from None
                time.sleep(0.1)
        server = psutil.Process(proc.pid)
        wrk(url, seconds=2, connections=4, headers={}, script=script)  # warm-up
        found = {}
        for count in connections:
            before = server.cpu_times()
            result = wrk(url, seconds=seconds, connections=count, headers={}, script=script)
            after = server.cpu_times()
            cpu = (after.user + after.system) - (before.user + before.system)
            requests = result["rps"] * seconds
            found[count] = {**result, "cpu_us": cpu / requests * 1e6}
            print(
                f"  {kind:8} {count:3} connections: {result['rps']:8.0f} req/s, "
                f"p50 {result['p50_ms']:6.2f} ms, server CPU {found[count]['cpu_us']:6.1f} µs "
                f"per request",
                flush=True,
            )
        return found
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--connections", default="1,4,16")
    parser.add_argument("--serve", choices=("chassis", "granian"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        run_server(args.serve, args.port)
        return
    connections = [int(c) for c in args.connections.split(",")]
    print(f"POST /echo, wrk -t1, {args.seconds} s per run, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "post.lua"
        script.write_text(SCRIPT)
        chassis = measure("chassis", connections, args.seconds, script)
        granian = measure("granian", connections, args.seconds, script)
    for count in connections:
        print(
            f"{count:3} connections: chassis / granian CPU per request "
            f"{chassis[count]['cpu_us'] / granian[count]['cpu_us']:.2f}, "
            f"req/s {chassis[count]['rps'] / granian[count]['rps']:.2f}"
        )


if __name__ == "__main__":
    main()
