"""Target resolution (one-line errors naming the fix) and the gateway client, in-process
over an ``httpx.MockTransport``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.client import ApiError, connect
from harness.pytest_plugin.system import _mode
from harness.target import Target, TargetError, check_reachable, local_target, resolve
from system.runtime.paths import StackPaths
from system.runtime.state import write_json_atomic

REMOTE = {
    "HARNESS_GATEWAY_URL": "http://gw.test/",
    "HARNESS_PROMETHEUS_URL": "http://prom.test",
    "HARNESS_JAEGER_URL": "http://jaeger.test",
    "HARNESS_ADMIN_PASSWORD": "s3cret",
}
TARGET = Target("test", "http://gw.test", "http://prom.test", "http://jaeger.test")


def test_a_gateway_url_makes_a_remote_target() -> None:
    target = resolve(REMOTE)
    assert (target.api_url, target.is_local, target.admin_password) == (
        "http://gw.test/api/v1",
        False,
        "s3cret",
    )
    assert "s3cret" not in repr(target)
    assert "s3cret" not in json.dumps(target.describe())


def test_a_half_configured_remote_target_names_what_is_missing() -> None:
    with pytest.raises(TargetError, match="HARNESS_JAEGER_URL is not: set it"):
        resolve({k: v for k, v in REMOTE.items() if k != "HARNESS_JAEGER_URL"})


def test_without_a_running_local_stack_the_error_says_how_to_start_one(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match=r"no running local stack 'x'.*harness --stack x up"):
        resolve({"HARNESS_STACK": "x"}, home=tmp_path)
    with pytest.raises(TargetError, match="stack name"):
        resolve({"HARNESS_STACK": "Bad Name"}, home=tmp_path)


def test_a_running_local_stack_is_found_from_its_state(tmp_path: Path) -> None:
    paths = StackPaths.for_stack("mine", tmp_path)
    ports = {"gateway": 31000, "prometheus": 31002, "jaeger_query": 31003}
    write_json_atomic(paths.state_file, {"all_ready": True, "ports": ports, "processes": []})
    (paths.data / "users").mkdir(parents=True)
    (paths.data / "users" / "admin-password").write_text("pw\n")
    target = resolve({"HARNESS_STACK": "mine"}, home=tmp_path)
    assert target == local_target(paths, {"all_ready": True, "ports": ports, "processes": []})
    assert (target.gateway_url, target.jaeger_url, target.admin_password) == (
        "http://127.0.0.1:31000",
        "http://127.0.0.1:31003",
        "pw",
    )


def test_an_unreachable_target_fails_in_one_line() -> None:
    with pytest.raises(TargetError) as failure:
        check_reachable(
            Target("t", "http://127.0.0.1:9", "http://127.0.0.1:9", "http://127.0.0.1:9"), timeout=1
        )
    message = str(failure.value)
    assert "\n" not in message
    assert message.count("unreachable") == 3


@pytest.mark.parametrize(
    ("option", "env", "expected"),
    [
        (None, {}, "new"),
        (None, {"HARNESS_GATEWAY_URL": "http://gw"}, "remote"),
        ("attach", {"HARNESS_GATEWAY_URL": "http://gw"}, "attach"),
        (None, {"HARNESS_TARGET": "attach"}, "attach"),
    ],
)
def test_the_plugin_picks_its_target_from_option_then_environment(
    option: str | None, env: dict[str, str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HARNESS_GATEWAY_URL", "HARNESS_TARGET"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    class Config:
        def getoption(self, name: str) -> str | None:
            return option

    assert _mode(Config()) == expected  # type: ignore[arg-type]


def test_an_unknown_target_mode_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_TARGET", "nowhere")

    class Config:
        def getoption(self, name: str) -> None:
            return None

    with pytest.raises(pytest.UsageError, match="choose one of new, attach, remote"):
        _mode(Config())  # type: ignore[arg-type]


def gateway(handler: Any) -> httpx.MockTransport:
    return httpx.MockTransport(handler)


async def test_an_order_carries_its_key_and_a_sampled_traceparent_whose_id_is_returned() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            202, json={"order_id": "o-1"}, headers={"location": "/api/v1/orders/o-1"}
        )

    async with connect(TARGET, transport=gateway(handler)) as api:
        placed = await api.as_token("tok").place_order({"p-1": 2}, idempotency_key="k-1")
    request = seen[0]
    assert str(request.url) == "http://gw.test/api/v1/orders/"
    assert request.headers["authorization"] == "Bearer tok"
    assert request.headers["idempotency-key"] == "k-1"
    version, trace_id, _, flags = request.headers["traceparent"].split("-")
    assert (version, flags, trace_id) == ("00", "01", placed.trace_id)
    assert json.loads(request.content) == {
        "items": [{"product_id": "p-1", "quantity": 2}],
        "card_token": "tok_visa_4242",
    }


async def test_an_unexpected_status_raises_with_the_problem_body() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(409, json={"title": "Conflict", "detail": "other body"})

    async with connect(TARGET, transport=gateway(handler)) as api:
        with pytest.raises(ApiError, match=r"POST .*/orders/ → 409: .*other body") as error:
            await api.place_order({"p": 1})
    assert error.value.status_code == 409


async def test_listing_follows_the_pages_to_the_total() -> None:
    orders = [
        {
            "order_id": f"o-{i}",
            "user_id": "u",
            "status": "CONFIRMED",
            "total_cents": 1,
            "items": [],
            "version": 4,
        }
        for i in range(250)
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        limit, offset = int(request.url.params["limit"]), int(request.url.params["offset"])
        page = orders[offset : offset + limit]
        return httpx.Response(
            200, json={"items": page, "total": len(orders), "limit": limit, "offset": offset}
        )

    async with connect(TARGET, transport=gateway(handler)) as api:
        listed = await api.orders()
    assert [o.order_id for o in listed] == [o["order_id"] for o in orders]


async def test_waiting_for_a_terminal_order_gives_up_at_its_deadline_saying_where_it_stood() -> (
    None
):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "order_id": "o-1",
                "user_id": "u",
                "status": "RESERVED",
                "total_cents": 1,
                "items": [],
                "version": 2,
            },
        )

    async with connect(TARGET, transport=gateway(handler)) as api:
        with pytest.raises(
            AssertionError, match=r"order o-1 not terminal after 0s; last: .*RESERVED"
        ):
            await api.wait_terminal("o-1", within=0.3, interval=0.05)
