"""Client CPU per service-to-service call: httpx, httpx over aiohttp, aiohttp, MeshClient.

    .venv/bin/python -m benchmarks.outbound_cost [--calls 2000] [--rounds 3] [--concurrency 1]

Each variant sends ``--calls`` GETs (sequential by default; ``--concurrency`` spreads them
over that many tasks) to a small aiohttp server on 127.0.0.1 that runs in a separate
process, so only the client's CPU is counted (process CPU time over the calls, after a
warm-up). Prints the median of the rounds per variant, in CPU ms per call and as a ratio
to raw aiohttp.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection

import aiohttp
import httpx
from aiohttp import web
from httpx_aiohttp import AiohttpTransport
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from system.chassis.outbound import MeshClient

Call = Callable[[], Awaitable[object]]


def serve(ready: Connection) -> None:
    """The upstream, in its own process: a small JSON answer to every GET."""

    async def ping(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "service": "bench"})

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/ping", ping)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        ready.send(runner.addresses[0][1])
        await asyncio.Event().wait()

    asyncio.run(main())


async def measure(call: Call, calls: int, warmup: int, tasks: int) -> tuple[float, float]:
    """CPU and wall seconds per call."""

    async def worker(count: int) -> None:
        for _ in range(count):
            await call()

    await worker(warmup)
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(calls // tasks) for _ in range(tasks)))
    done = calls // tasks * tasks
    return (time.process_time() - cpu) / done, (time.perf_counter() - wall) / done


async def run_variant(
    name: str, url: str, calls: int, warmup: int, tasks: int
) -> tuple[float, float]:
    if name == "aiohttp.ClientSession":
        async with aiohttp.ClientSession() as session:

            async def raw() -> object:
                async with session.get(f"{url}/ping") as response:
                    return await response.read()

            return await measure(raw, calls, warmup, tasks)
    if name.startswith("MeshClient"):
        provider = TracerProvider(shutdown_on_exit=False) if "SDK" in name else None
        async with MeshClient(
            {"bench": url}, registry=CollectorRegistry(), tracer_provider=provider
        ) as mesh:

            async def call() -> object:
                return await mesh.request("bench", "GET", "/ping")

            return await measure(call, calls, warmup, tasks)
    transport = AiohttpTransport() if "aiohttp" in name else None
    async with httpx.AsyncClient(transport=transport) as client:
        return await measure(lambda: client.get(f"{url}/ping"), calls, warmup, tasks)


VARIANTS = [
    "httpx.AsyncClient",
    "httpx + httpx_aiohttp transport",
    "aiohttp.ClientSession",
    "MeshClient (no-op tracer)",
    "MeshClient (SDK tracer, no exporter)",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=1, help="tasks sending at once")
    args = parser.parse_args()

    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    server = context.Process(target=serve, args=(sender,), daemon=True)
    server.start()
    try:
        if not receiver.poll(10):
            raise SystemExit("the benchmark server did not start")
        url = f"http://127.0.0.1:{receiver.recv()}"
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}
        for _ in range(args.rounds):  # interleaved, so a slow spell hits every variant
            for name in VARIANTS:
                measured = run_variant(name, url, args.calls, args.warmup, args.concurrency)
                results[name].append(asyncio.run(measured))
    finally:
        server.terminate()
        server.join()

    cpu = {name: statistics.median(c for c, _ in rows) for name, rows in results.items()}
    wall = {name: statistics.median(w for _, w in rows) for name, rows in results.items()}
    base = cpu["aiohttp.ClientSession"]
    mode = "sequential" if args.concurrency == 1 else f"over {args.concurrency} tasks"
    print(f"{args.calls} GETs per round ({mode}), median of {args.rounds} rounds")
    print(f"{'client':<38} {'CPU ms/call':>11} {'wall ms/call':>12} {'x aiohttp':>9}")
    for name in VARIANTS:
        print(
            f"{name:<38} {cpu[name] * 1e3:>11.3f} {wall[name] * 1e3:>12.3f} "
            f"{cpu[name] / base:>9.2f}"
        )


if __name__ == "__main__":
    main()
