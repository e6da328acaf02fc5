"""Re-record the fixtures of the harness's trace and metrics tests from a real stack.

Run against a running local stack (a mesh fault is injected through its Envoy admin, so
a deployed target will not do), then review and commit ``recordings/``::

    .venv/bin/harness --stack rec --port-base 41000 up
    HARNESS_STACK=rec .venv/bin/python -m tests.unit.harness.record
    .venv/bin/harness --stack rec down

It takes about two minutes: a confirmed and a declined order (known trace ids); orders
placed before, during and after 100 % 503 aborts on the mesh edge into payments (the
orders→payments breaker opens, then closes); then every query the unit tests replay,
through the harness's own ``Jaeger`` and ``Metrics``, recorded as they go over the wire.
Re-record after changing a query: replay matches requests exactly (``--queries-only``
re-runs the queries over the traffic of the last ``scenario.json``, while Prometheus and
Jaeger still hold it).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from harness.metrics import Metrics, MetricsError, Window
from harness.target import Target, resolve
from harness.traces import Jaeger, Match
from system.runtime.config.envoy import fault_keys
from tests.unit.harness.cassette import (
    RECORDINGS,
    RecordingSession,
    RecordingTransport,
    save,
)

KEEP_RESOURCE = {"service.name", "service.instance.id"}
DROP_SPAN_ATTRIBUTES = {"db.statement", "@jaeger@warnings"}


def trim(body: Any, *, keep_db: bool = False) -> Any:
    """Drop what no test reads from an OTLP-JSON body: SQL text, SDK versions, and the
    database spans themselves unless ``keep_db``."""
    if not isinstance(body, dict) or "result" not in body:
        return body
    for resource_spans in body["result"].get("resourceSpans", []):
        resource = resource_spans.get("resource", {})
        resource["attributes"] = [
            a for a in resource.get("attributes", []) if a["key"] in KEEP_RESOURCE
        ]
        for scope_spans in resource_spans.get("scopeSpans", []):
            scope_spans["spans"] = [
                span
                for span in scope_spans.get("spans", [])
                if keep_db or not any(a["key"] == "db.system" for a in span.get("attributes", []))
            ]
            for span in scope_spans["spans"]:
                span["attributes"] = [
                    a for a in span.get("attributes", []) if a["key"] not in DROP_SPAN_ATTRIBUTES
                ]
    return body


class Shop:
    """Just enough of the gateway to place orders as the seeded admin."""

    def __init__(self, target: Target) -> None:
        self.http = httpx.Client(base_url=target.api_url, timeout=15)
        token = self.http.post(
            "/users/login",
            json={"email": target.admin_email, "password": target.admin_password},
        ).json()["access_token"]
        self.auth = {"Authorization": f"Bearer {token}"}
        created = self.http.post(
            "/products/",
            headers=self.auth,
            json={
                "sku": f"REC-{secrets.token_hex(4)}",
                "name": "Recorded lamp",
                "price_cents": 1500,
                "initial_stock": 10_000,
            },
        )
        created.raise_for_status()
        self.product = created.json()["id"]

    def order(self, card: str = "tok_visa_4242") -> str:
        """Place one order with a fresh trace id; returns the trace id."""
        trace_id = secrets.token_hex(16)
        placed = self.http.post(
            "/orders/",
            headers={
                **self.auth,
                "Idempotency-Key": secrets.token_hex(8),
                "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01",
            },
            json={"items": [{"product_id": self.product, "quantity": 1}], "card_token": card},
        )
        placed.raise_for_status()
        return trace_id

    def traffic(self, seconds: float, every: float = 1.0) -> Window:
        """Orders at a steady pace for ``seconds``; the window they covered."""
        start = datetime.now(UTC)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.order()
            time.sleep(every)
        return Window(start, datetime.now(UTC))


@contextmanager
def payments_abort(target: Target) -> Iterator[None]:
    """Every call through the mesh into payments answered 503 by Envoy."""
    assert target.local is not None, "recording injects a mesh fault: needs a local stack"
    admin = f"http://127.0.0.1:{target.local.ports['envoy_admin']}/runtime_modify"
    keys = fault_keys("payments")
    httpx.post(admin, params={keys["abort_percent"]: "100", keys["abort_http_status"]: "503"})
    try:
        yield
    finally:
        httpx.post(admin, params={keys["abort_percent"]: "0"})


async def settled(target: Target, trace_id: str, *wanted: Match) -> None:
    """Wait (unrecorded) until the trace holds every wanted span and stops growing."""
    async with Jaeger(target.jaeger_url) as jaeger:

        def complete(trace: Any) -> bool:
            return all(m.select(trace.spans) for m in wanted)

        trace = await jaeger.wait_for_trace(trace_id, until=complete, timeout=60)
        while True:
            await asyncio.sleep(2)
            again = await jaeger.get_trace(trace_id)
            if again is not None and len(again) == len(trace):
                return
            trace = again or trace


async def record_jaeger(target: Target, scenario: dict[str, Any]) -> None:
    transport = RecordingTransport()
    windows = scenario["windows"]
    opened = datetime.fromisoformat(scenario["breaker_opened_at"])
    fault_end = datetime.fromisoformat(windows["during"][1])
    async with httpx.AsyncClient(transport=transport, timeout=15) as client:
        jaeger = Jaeger(target.jaeger_url, client)
        await jaeger.services()
        await jaeger.operations("payments")
        for key in ("confirmed", "declined", "breaker_open"):
            await jaeger.get_trace(scenario["trace_ids"][key])
        await jaeger.get_trace(scenario["trace_ids"]["unknown"])
        await jaeger.find_traces(
            "orders", since=opened, until=fault_end, operation="POST /", limit=2
        )
        before = [datetime.fromisoformat(t) for t in windows["before"]]
        await jaeger.find_traces(
            "payments", since=before[0], until=before[1], operation="POST /authorize", limit=2
        )
        later = datetime.fromisoformat(windows["after"][1]) + timedelta(hours=1)
        await jaeger.find_traces("orders", since=later, until=later + timedelta(hours=1))
    declined = f"/api/v3/traces/{scenario['trace_ids']['declined']}"
    for item in transport.interactions:
        item["body"] = trim(item["body"], keep_db=item["path"] == declined)
    save("jaeger.json", transport.interactions)


def record_prometheus(target: Target, scenario: dict[str, Any]) -> None:
    session = RecordingSession()
    metrics = Metrics(target.prometheus_url, session=session)
    windows = {
        name: Window(*(datetime.fromisoformat(t) for t in bounds))
        for name, bounds in scenario["windows"].items()
    }
    for window in windows.values():
        metrics.error_ratio("payments", window, source="mesh")
        metrics.latency_quantile("payments", window, source="mesh")
        metrics.error_ratio("orders", window)
        metrics.latency_quantile("orders", window)
    whole = Window(windows["before"].start, windows["after"].end)
    metrics.breaker_state("orders", "payments", whole)
    metrics.error_ratio("nosuch", whole)
    metrics.value('up{job="envoy"}', at=whole.end)
    metrics.value("nosuch_metric_total", at=whole.end)
    for refused in ("up", "sum(rate(http_requests_total[5m])"):  # several series; bad syntax
        try:
            metrics.value(refused, at=whole.end)
        except MetricsError as exc:
            print(f"recorded the refusal of {refused!r}: {exc}")
    save("prometheus.json", session.interactions)


def drive(target: Target) -> dict[str, Any]:
    """The traffic and the fault; returns the trace ids and windows to record."""
    shop = Shop(target)
    ids = {"confirmed": shop.order(), "declined": shop.order("tok_decline_4000")}
    print("before the fault ...")
    before = shop.traffic(20)
    with payments_abort(target):
        print("aborting calls into payments ...")
        start = datetime.now(UTC)
        shop.traffic(8)
        opened = datetime.now(UTC)  # the breaker (5 failures) is open by now
        ids["breaker_open"] = shop.order()
        shop.traffic(8)
        during = Window(start, datetime.now(UTC))
    print("waiting for the breaker to reset ...")
    shop.traffic(15, every=1.5)
    after = shop.traffic(20)
    ids["unknown"] = secrets.token_hex(16)
    saga = (Match("orders", "saga *"), Match("analytics", "orders.events process"))
    for key in ("confirmed", "declined", "breaker_open"):
        asyncio.run(settled(target, ids[key], *saga))
    time.sleep(5)  # two scrapes past the last window
    return {
        "trace_ids": ids,
        "breaker_opened_at": opened.isoformat(),
        "windows": {
            name: [w.start.isoformat(), w.end.isoformat()]
            for name, w in (("before", before), ("during", during), ("after", after))
        },
    }


def main(argv: list[str]) -> None:
    """``--queries-only``: keep ``scenario.json`` (and its traffic) and re-run the queries."""
    target = resolve()
    path = RECORDINGS / "scenario.json"
    if "--queries-only" in argv:
        scenario = json.loads(path.read_text())
    else:
        scenario = drive(target)
        path.write_text(json.dumps(scenario, indent=1) + "\n")
    asyncio.run(record_jaeger(target, scenario))
    record_prometheus(target, scenario)
    print(f"recorded into {RECORDINGS}")


if __name__ == "__main__":
    main(sys.argv[1:])
