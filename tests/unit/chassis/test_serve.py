"""The chassis' server: a request in flight when the replica is told to stop is answered,
then the app's lifespan ends (where the outbox and the spans are flushed)."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
from litestar import Litestar, get, route

from harness.localstack import free_port
from system.chassis.serve import HeadersWithBody, server
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


class Recorded:
    """A transport that records what is written, and when it is closed."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.writes.append(b"<closed>")
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"extra {name}"


HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


async def test_the_headers_go_out_with_the_body_in_one_write() -> None:
    recorded = Recorded()
    transport = HeadersWithBody(recorded, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(HEAD)
    assert recorded.writes == []
    transport.write(b"{}")
    assert recorded.writes == [HEAD + b"{}"]
    transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # an interim answer is not held
    assert recorded.writes[-1] == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert transport.get_extra_info("peername") == "extra peername"
    await asyncio.sleep(0)  # the end-of-turn flush has nothing left to write
    assert len(recorded.writes) == 2


async def test_held_headers_are_written_by_the_end_of_the_turn_or_by_close() -> None:
    recorded = Recorded()
    transport = HeadersWithBody(recorded, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(HEAD)  # a streaming app that has not produced its first chunk yet
    await asyncio.sleep(0)
    assert recorded.writes == [HEAD]
    transport.write(HEAD)  # an app that fails after starting: uvicorn closes the connection
    transport.close()
    assert recorded.writes == [HEAD, HEAD, b"<closed>"]


async def test_a_served_answer_is_whole_through_the_one_write_transport() -> None:
    @route("/thing", http_method=["GET", "HEAD"])
    async def thing() -> dict[str, str]:
        return {"a": "b" * 5000}

    port = free_port()
    running = server(Litestar([thing]), ServiceSettings(name="served", port=port))
    serving = asyncio.create_task(running.serve())
    try:
        for _ in range(100):
            if running.started:
                break
            await asyncio.sleep(0.01)
        async with aiohttp.ClientSession() as http:
            for _ in range(3):  # one keep-alive connection, answered three times
                async with http.get(f"http://127.0.0.1:{port}/thing") as response:
                    assert response.status == 200
                    assert response.headers["content-type"] == "application/json"
                    assert await response.json() == {"a": "b" * 5000}
                # HEAD: headers and no body write at all, flushed at the end of the turn
                async with http.head(f"http://127.0.0.1:{port}/thing") as response:
                    assert response.status == 200
                    assert await response.read() == b""
    finally:
        running.should_exit = True
        await asyncio.wait_for(serving, 10)
