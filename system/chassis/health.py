"""``/health/live`` (the process answers) and ``/health/ready`` (its dependencies do)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Controller, Request, get
from litestar.response import Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from system.chassis.problems import problem_response

ReadyCheck = Callable[[], Awaitable[str | None]]
"""Returns ``None`` when healthy, else what is wrong."""

CHECK_TIMEOUT = 2.0


def database_check(engine: AsyncEngine) -> ReadyCheck:
    async def check() -> str | None:
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:
            return f"database: {exc.__class__.__name__}"
        return None

    return check


class HealthController(Controller):
    path = "/health"
    include_in_schema = False

    @get("/live", opt={"exclude_from_auth": True})
    async def live(self) -> dict[str, str]:
        return {"status": "live"}

    @get("/ready", opt={"exclude_from_auth": True})
    async def ready(self, request: Request[Any, Any, Any]) -> Response[Any]:
        checks: dict[str, ReadyCheck] = request.app.state.ready_checks
        results = await asyncio.gather(
            *(asyncio.wait_for(check(), CHECK_TIMEOUT) for check in checks.values()),
            return_exceptions=True,
        )
        failing = {
            name: (str(result) or result.__class__.__name__)
            if isinstance(result, BaseException)
            else result
            for name, result in zip(checks, results, strict=True)
            if result is not None
        }
        if failing:
            return problem_response(503, "not ready", failing=failing)
        return Response({"status": "ready", "checks": sorted(checks)})
