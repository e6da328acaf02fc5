"""CPU per catalog read inside the service, with no network: where a request's time goes.

    .venv/bin/python -m benchmarks.request_cpu [--requests 1000] [--profile]

Builds the products app on a temporary SQLite file, then calls the ASGI app directly
(no server, no client) for ``GET /{id}`` with a valid token, and for ``/health/live`` as
the floor. Prints milliseconds of wall and CPU time per request; ``--profile`` adds the
top of a cProfile by cumulative time.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from litestar import Litestar

from system.chassis.keys import KeyFiles, key_id
from system.services.products.app import build
from system.services.products.settings import ProductsSettings
from system.services.users.security import TokenIssuer

TRACEPARENT = {
    "none": None,
    "sampled": b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "unsampled": b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
}


async def call(
    app: Litestar,
    path: str,
    token: str,
    method: str = "GET",
    body: bytes = b"",
    traceparent: bytes | None = None,
) -> list[dict[str, Any]]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
        "headers": [
            (b"host", b"bench"),
            (b"authorization", f"Bearer {token}".encode()),
            (b"content-type", b"application/json"),
            *([(b"traceparent", traceparent)] if traceparent else []),
        ],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)  # type: ignore[arg-type]
    return sent


async def measure(
    app: Litestar, path: str, token: str, n: int, traceparent: bytes | None = None
) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        await call(app, path, token, traceparent=traceparent)
    return (time.perf_counter() - wall) / n * 1000, (time.process_time() - cpu) / n * 1000


async def run(requests: int, profile: bool, traceparent: bytes | None) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as folder:
        keys = KeyFiles(Path(folder) / "jwt").ensure()
        issuer = TokenIssuer(
            keys.private.read_bytes(),
            key_id(keys.public.read_bytes()),
            "microharness-users",
            "microharness",
            timedelta(hours=1),
        )
        token = issuer.issue(user_id="bench", role="admin", email="bench@example.test")
        app = build(
            ProductsSettings(
                data_dir=Path(folder) / "products", log_json=False, jwt_public_key_file=keys.public
            )
        )
        async with app.lifespan():
            body = b'{"sku": "BENCH-1", "name": "lamp", "price_cents": 5, "initial_stock": 3}'
            created = await call(app, "/", token, "POST", body)
            product = json.loads(created[1]["body"])["id"]
            await measure(app, f"/{product}", token, 200)  # warm-up
            for name, path in (("GET /{id}", f"/{product}"), ("GET /health/live", "/health/live")):
                wall, cpu = await measure(app, path, token, requests, traceparent)
                print(f"{name:18} wall {wall:.3f} ms/request  cpu {cpu:.3f} ms/request")
            if profile:
                profiler = cProfile.Profile()
                profiler.enable()
                await measure(app, f"/{product}", token, 300, traceparent)
                profiler.disable()
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--traceparent",
        choices=tuple(TRACEPARENT),
        default="none",
        help="the caller's trace context: none (the service starts a sampled trace), or "
        "a sampled or unsampled parent, as the gateway passes on",
    )
    args = parser.parse_args()
    asyncio.run(run(args.requests, args.profile, TRACEPARENT[args.traceparent]))


if __name__ == "__main__":
    main()
