"""The baseline of the catalog-read benchmark: a trivial Litestar handler, served the same
way as every service (the chassis' server, one process), started by the supervisor like one."""

from __future__ import annotations

import os

from litestar import Litestar, get

from system.chassis.serve import serve
from system.chassis.settings import ServiceSettings


@get("/hello")
async def hello() -> dict[str, str]:
    return {"hello": "world"}


@get("/health/ready")
async def ready() -> dict[str, str]:
    return {"status": "ready"}


if __name__ == "__main__":
    settings = ServiceSettings(name="trivial", port=int(os.environ["TRIVIAL_PORT"]))
    serve(lambda: Litestar([hello, ready]), settings)
