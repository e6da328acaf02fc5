"""The chassis' request metrics: Litestar's Prometheus series, names and labels, counted
per route template and status, errors counted, nothing for health checks."""

from __future__ import annotations

from pathlib import Path

from litestar import get
from litestar.params import FromPath
from litestar.testing import AsyncTestClient
from prometheus_client import REGISTRY

from system.chassis.app import ServiceParts, create_app
from system.chassis.settings import ServiceSettings


@get("/items/{n:int}")
async def item(n: FromPath[int]) -> dict[str, int]:
    return {"n": n}


@get("/fails")
async def fails() -> None:
    raise RuntimeError("boom")


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"app_name": "metered", **labels}) or 0.0


async def test_requests_are_counted_per_route_template_and_status(tmp_path: Path) -> None:
    app = create_app(
        ServiceSettings(name="metered", data_dir=tmp_path, log_json=False, log_level="CRITICAL"),
        ServiceParts(route_handlers=[item, fails]),
    )
    ok = {"method": "GET", "path": "/items/{n}", "status_code": "200"}
    failed = {"method": "GET", "path": "/fails", "status_code": "500"}
    before = {
        "ok": sample("http_requests_total", **ok),
        "ok_hist": sample("http_request_duration_seconds_count", **ok),
        "failed": sample("http_requests_total", **failed),
        "errors": sample("http_requests_error_total", **failed),
        "ok_errors": sample("http_requests_error_total", **ok),
    }
    async with AsyncTestClient(app) as client:
        for n in range(3):
            assert (await client.get(f"/items/{n}")).status_code == 200
        assert (await client.get("/fails")).status_code == 500
        assert (await client.get("/health/live")).status_code == 200
        exposed = (await client.get("/metrics")).text
    assert sample("http_requests_total", **ok) - before["ok"] == 3
    assert sample("http_request_duration_seconds_count", **ok) - before["ok_hist"] == 3
    assert sample("http_requests_total", **failed) - before["failed"] == 1
    assert sample("http_requests_error_total", **failed) - before["errors"] == 1
    assert sample("http_requests_error_total", **ok) == before["ok_errors"] == 0
    in_progress = {"method": "GET", "path": "/items/{n}", "status_code": "200"}
    assert sample("http_requests_in_progress", **in_progress) == 0
    assert 'path="/health/live"' not in exposed
    assert 'http_requests_total{app_name="metered",method="GET",path="/items/{n}"' in exposed
