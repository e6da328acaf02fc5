"""Fixtures over the recordings (``record.py`` makes them from a real stack)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest

from harness.metrics import Metrics, Window
from harness.traces import Jaeger, Trace, traces_from_otlp
from tests.unit.harness.cassette import RECORDINGS, Interaction, ReplaySession, load, replay_client

PROMETHEUS = "http://prometheus.test"
JAEGER = "http://jaeger.test"


@pytest.fixture(scope="session")
def scenario() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((RECORDINGS / "scenario.json").read_text())
    return loaded


@pytest.fixture(scope="session")
def windows(scenario: dict[str, Any]) -> dict[str, Window]:
    return {
        name: Window(*(datetime.fromisoformat(t) for t in bounds))
        for name, bounds in scenario["windows"].items()
    }


@pytest.fixture(scope="session")
def jaeger_recording() -> list[Interaction]:
    return load("jaeger.json")


def recorded_trace(interactions: list[Interaction], trace_id: str) -> Trace:
    """The trace as recorded by ``GET /api/v3/traces/{trace_id}``."""
    body = next(i["body"] for i in interactions if i["path"] == f"/api/v3/traces/{trace_id}")
    return traces_from_otlp(body["result"])[0]


@pytest.fixture(scope="session")
def confirmed(jaeger_recording: list[Interaction], scenario: dict[str, Any]) -> Trace:
    """A saga that ended CONFIRMED: gateway, orders, users, products, payments, Kafka."""
    return recorded_trace(jaeger_recording, scenario["trace_ids"]["confirmed"])


@pytest.fixture(scope="session")
def declined(jaeger_recording: list[Interaction], scenario: dict[str, Any]) -> Trace:
    """A saga whose card was declined (402): authorize fails, release and void follow."""
    return recorded_trace(jaeger_recording, scenario["trace_ids"]["declined"])


@pytest.fixture(scope="session")
def breaker_open(jaeger_recording: list[Interaction], scenario: dict[str, Any]) -> Trace:
    """An order placed while the orders→payments breaker was open (mesh aborts into
    payments): authorize retried without a call, then release, void, cancel."""
    return recorded_trace(jaeger_recording, scenario["trace_ids"]["breaker_open"])


@pytest.fixture
async def jaeger(jaeger_recording: list[Interaction]) -> AsyncIterator[Jaeger]:
    client, _ = replay_client(jaeger_recording)
    async with client:
        yield Jaeger(JAEGER, client)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(PROMETHEUS, session=ReplaySession(load("prometheus.json")))
