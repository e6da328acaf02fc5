"""Record HTTP exchanges from a real stack into JSON, and replay them in-process.

A cassette file is ``{"interactions": [{"method", "path", "params", "status", "body"}]}``.
Replay matches on method, path and query parameters; several interactions with the same
request are served in order, the last one repeating. A request nobody recorded fails the
test, naming the request (so a changed query says "re-record").

* Jaeger (httpx): :class:`RecordingTransport` wraps the network, :func:`replay_client` serves.
* Prometheus (requests): :class:`RecordingSession`, :class:`ReplaySession`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import requests

RECORDINGS = Path(__file__).parent / "recordings"

Interaction = dict[str, Any]


def _key(method: str, url: str) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    parts = urlsplit(url)
    return method.upper(), parts.path, tuple(sorted(parse_qsl(parts.query)))


def _interaction(method: str, url: str, status: int, content: bytes) -> Interaction:
    method, path, params = _key(method, url)
    try:
        body: Any = json.loads(content)
    except ValueError:
        body = content.decode(errors="replace")
    return {"method": method, "path": path, "params": dict(params), "status": status, "body": body}


def load(name: str) -> list[Interaction]:
    interactions: list[Interaction] = json.loads((RECORDINGS / name).read_text())["interactions"]
    return interactions


def save(name: str, interactions: list[Interaction]) -> None:
    """One interaction a line: compact, and a re-recording diffs by request."""
    lines = ",\n".join(json.dumps(item, sort_keys=True) for item in interactions)
    (RECORDINGS / name).write_text(f'{{"interactions": [\n{lines}\n]}}\n')


class Replay:
    """The recorded answers, by request."""

    def __init__(self, interactions: list[Interaction]) -> None:
        self._queues: dict[Any, list[Interaction]] = defaultdict(list)
        for item in interactions:
            key = (item["method"], item["path"], tuple(sorted(item["params"].items())))
            self._queues[key].append(item)
        self.requests: list[tuple[str, str]] = []

    def answer(self, method: str, url: str) -> tuple[int, bytes]:
        key = _key(method, url)
        self.requests.append((key[0], url))
        queue = self._queues.get(key)
        if not queue:
            known = "\n".join(f"  {k[0]} {k[1]} {dict(k[2])}" for k in self._queues)
            raise AssertionError(f"no recorded answer to {key[0]} {url}; recorded:\n{known}")
        item = queue.pop(0) if len(queue) > 1 else queue[0]
        body = item["body"]
        content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        return item["status"], content


def replay_client(interactions: list[Interaction]) -> tuple[httpx.AsyncClient, Replay]:
    """An ``httpx.AsyncClient`` answering from ``interactions`` (and the replay, to inspect
    the requests made)."""
    replay = Replay(interactions)

    def handler(request: httpx.Request) -> httpx.Response:
        status, content = replay.answer(request.method, str(request.url))
        return httpx.Response(status, content=content, headers={"content-type": "application/json"})

    return httpx.AsyncClient(transport=httpx.MockTransport(handler)), replay


class RecordingTransport(httpx.AsyncBaseTransport):
    """The real network, keeping every exchange in ``interactions``."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.interactions: list[Interaction] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        content = await response.aread()
        self.interactions.append(
            _interaction(request.method, str(request.url), response.status_code, content)
        )
        return httpx.Response(response.status_code, headers=response.headers, content=content)

    async def aclose(self) -> None:
        await self._inner.aclose()


class RecordingSession(requests.Session):
    """A ``requests.Session`` keeping every exchange in ``interactions``."""

    def __init__(self) -> None:
        super().__init__()
        self.interactions: list[Interaction] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        response = super().send(request, **kwargs)
        self.interactions.append(
            _interaction(
                str(request.method), str(request.url), response.status_code, response.content
            )
        )
        return response


class ReplaySession(requests.Session):
    """A ``requests.Session`` answering from recorded interactions, never the network."""

    def __init__(self, interactions: list[Interaction]) -> None:
        super().__init__()
        self.replay = Replay(interactions)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        status, content = self.replay.answer(str(request.method), str(request.url))
        response = requests.Response()
        response.status_code = status
        response._content = content
        response.headers["content-type"] = "application/json"
        response.url = str(request.url)
        response.request = request
        return response
