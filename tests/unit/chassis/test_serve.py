"""The chassis' server: a request in flight when the replica is told to stop is answered,
then the app's lifespan ends (where the outbox and the spans are flushed)."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
from litestar import Litestar, get

from harness.localstack import free_port
from system.chassis.serve import server
from system.chassis.settings import ServiceSettings


async def test_stopping_drains_the_request_in_flight_then_ends_the_lifespan() -> None:
    events: list[str] = []
    entered = asyncio.Event()

    @get("/slow")
    async def slow() -> dict[str, str]:
        entered.set()
        await asyncio.sleep(0.3)
        events.append("answered")
        return {"done": "yes"}

    async def flush() -> None:
        events.append("lifespan ended")

    port = free_port()
    running = server(
        Litestar([slow], on_shutdown=[flush]), ServiceSettings(name="served", port=port)
    )
    serving = asyncio.create_task(running.serve())
    async with aiohttp.ClientSession() as http:
        for _ in range(100):  # the listener is up within a second
            if running.started:
                break
            await asyncio.sleep(0.01)
        call = asyncio.create_task(http.get(f"http://127.0.0.1:{port}/slow"))
        await asyncio.wait_for(entered.wait(), 5)
        running.should_exit = True  # what SIGTERM does
        response = await call
        assert response.status == 200
        assert await response.json() == {"done": "yes"}
    await asyncio.wait_for(serving, 10)
    assert events == ["answered", "lifespan ended"]
    with socket.socket() as sock:  # and the port is closed
        assert sock.connect_ex(("127.0.0.1", port)) != 0
