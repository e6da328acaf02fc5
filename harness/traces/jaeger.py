"""Jaeger v2's query API (``/api/v3``, OTLP-JSON), async, over an injectable ``httpx`` client.

Spans reach Jaeger late (each service batches its exports), so a test never reads a trace
once and hopes: :meth:`Jaeger.wait_for_trace` polls until a condition holds or a deadline
passes, then fails showing the last trace it saw.

Exceptions::

    JaegerError            Jaeger answered with an error other than "not found"
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import httpx

from harness.traces.model import Trace, traces_from_otlp

Condition = Callable[[Trace], object]
"""Called with each version of a trace seen: truthy = done; an ``AssertionError`` = not yet."""


class JaegerError(RuntimeError):
    """Jaeger refused a query (the message carries its status and error text)."""


@dataclass(frozen=True, order=True)
class Operation:
    name: str
    kind: str
    """``server``, ``client``, ... as Jaeger reports it (may be empty)."""


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError(f"{moment!r} has no timezone: use datetime.now(UTC)")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Jaeger:
    """A client of one Jaeger query service; ``client`` replaces the network (tests pass an
    ``httpx.AsyncClient(transport=httpx.MockTransport(...))``)."""

    def __init__(
        self, base_url: str, client: httpx.AsyncClient | None = None, *, timeout: float = 10.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._owned = client is None
        self._client = client if client is not None else httpx.AsyncClient(timeout=timeout)

    async def __aenter__(self) -> Jaeger:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client if this object made it (an injected one is the caller's)."""
        if self._owned:
            await self._client.aclose()

    async def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        """The decoded body, or None when Jaeger says it has nothing (404)."""
        response = await self._client.get(f"{self.base_url}/api/v3{path}", params=params)
        if response.status_code == httpx.codes.NOT_FOUND:
            return None
        if response.status_code != httpx.codes.OK:
            raise JaegerError(
                f"GET {response.request.url} -> {response.status_code}: {response.text}"
            )
        return response.json()

    async def services(self) -> list[str]:
        """Every service that reported a span, sorted."""
        body = await self._get("/services")
        return sorted(body["services"]) if body else []

    async def operations(self, service: str) -> list[Operation]:
        """The span names ``service`` reported, with their kinds."""
        body = await self._get("/operations", {"service": service})
        found = body.get("operations", []) if body else []
        return sorted(Operation(o["name"], o.get("spanKind", "")) for o in found)

    async def get_trace(self, trace_id: str) -> Trace | None:
        """The trace as Jaeger has it now, or None if it has no span of it (yet)."""
        body = await self._get(f"/traces/{trace_id.lower()}")
        traces = traces_from_otlp(body["result"]) if body else []
        return next((t for t in traces if t.trace_id == trace_id.lower()), None)

    async def find_traces(
        self,
        service: str,
        *,
        since: datetime,
        until: datetime | None = None,
        operation: str | None = None,
        limit: int = 20,
    ) -> list[Trace]:
        """Traces with a span of ``service`` (and ``operation``) started in [since, until],
        earliest first; each holds every span of its trace, other services' included."""
        params = {
            "query.service_name": service,
            "query.start_time_min": _rfc3339(since),
            "query.start_time_max": _rfc3339(until or datetime.now(UTC)),
            "query.num_traces": str(limit),
        }
        if operation is not None:
            params["query.operation_name"] = operation
        body = await self._get("/traces", params)
        return traces_from_otlp(body["result"]) if body else []

    async def wait_for_trace(
        self,
        trace_id: str,
        *,
        until: Condition | None = None,
        timeout: float = 30.0,  # noqa: ASYNC109 (the deadline goes into the failure message)
        interval: float = 0.5,
    ) -> Trace:
        """Poll until the trace exists and ``until(trace)`` is truthy (an ``AssertionError``
        from it counts as "not yet"; the ``assert_*`` helpers return a truthy value, so they
        can be passed as is). On the deadline, raise ``AssertionError`` with the last
        trace seen, rendered, and why it did not do."""
        deadline = time.monotonic() + timeout
        last: Trace | None = None
        reason = "Jaeger has no span of it"
        while True:
            try:
                seen = await self.get_trace(trace_id)
                if seen is not None:
                    last = seen
                    verdict = until(seen) if until is not None else True
                    if verdict:
                        return seen
                    reason = f"{_describe(until)} returned {verdict!r}"
            except AssertionError as exc:
                reason = str(exc)
            except httpx.TransportError as exc:
                reason = f"Jaeger unreachable: {exc!r}"
            if time.monotonic() + interval > deadline:
                break
            await asyncio.sleep(interval)
        rendered = last.render() if last is not None else "(never found)"
        raise AssertionError(
            f"trace {trace_id} not as expected after {timeout:g} s\n"
            f"last check: {reason}\nlast seen: {rendered}"
        )


def _describe(condition: Condition | None) -> str:
    return getattr(condition, "__name__", repr(condition))
