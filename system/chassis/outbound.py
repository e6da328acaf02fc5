"""The client of service-to-service calls, through the Envoy mesh listener of each callee.

``MeshClient(settings.mesh)`` knows the upstreams by name; every call through it has a
timeout per attempt, bounded retries with jittered exponential backoff (idempotent
calls only), a circuit breaker per upstream, Prometheus metrics, and one client span
per attempt whose context travels in the ``traceparent`` header. What a caller may
catch::

    UpstreamError               .upstream: the name of the callee
    ├── UpstreamUnavailable     its breaker is open: nothing was sent
    ├── UpstreamTimeout         every attempt timed out
    └── UpstreamFailed          connection errors or a 5xx after the retries;
                                .status and .response when the last attempt got an answer

Retried, for idempotent calls only (GET, HEAD, OPTIONS, PUT, DELETE, or a call made with
``idempotent=True``, such as a POST carrying an Idempotency-Key): connection errors,
timeouts, 502, 503 and 504, which is what Envoy and a restarting or overloaded replica
answer. A 500 is not retried: the upstream handled the request and broke, which usually
happens again. A 1xx-4xx answer is returned as it is; the caller decides what it means.

The breaker counts one failure per call that raised UpstreamTimeout or UpstreamFailed,
after its retries; a 4xx is an answer and counts as a success. ``breaker_threshold``
failures in a row open it. ``breaker_reset_s`` later, the next call is the one trial
(the others fail fast meanwhile) that closes it again or reopens it. A call the caller
cancels is left out of the metrics, but purgatory counts it as a failure: it counts any
exception that crosses the breaker, which is why a request is built before it.
"""

from __future__ import annotations

import asyncio
import random
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aiohttp
import httpx
import msgspec
import prometheus_client
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from purgatory import AsyncCircuitBreakerFactory, ContextChanged, Event
from purgatory.domain.model import OpenedState

from system.chassis.trace_context import follows_parent_sampling, span_or_parent

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider
    from purgatory.service._async.circuitbreaker import AsyncCircuitBreaker

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRYABLE_STATUSES = frozenset({502, 503, 504})
BACKOFF_S = 0.05
"""The first retry waits up to this long, each next one up to twice as long as the one
before, never more than :data:`MAX_BACKOFF_S` (full jitter: a uniform draw below that)."""
MAX_BACKOFF_S = 0.5


def _backoff(attempt: int) -> float:
    """Seconds to wait after the ``attempt``-th attempt failed."""
    return random.uniform(0, min(MAX_BACKOFF_S, BACKOFF_S * 2 ** (attempt - 1)))  # noqa: S311


_GAUGE_VALUE = {"closed": 0, "half-opened": 1, "opened": 2}


class UpstreamError(Exception):
    """A call to ``upstream`` got no answer the caller can use."""

    outcome = "failed"

    def __init__(self, upstream: str, message: str) -> None:
        super().__init__(f"{upstream}: {message}")
        self.upstream = upstream


class UpstreamUnavailable(UpstreamError):
    """The breaker of ``upstream`` is open: the call was not attempted."""

    outcome = "unavailable"


class UpstreamTimeout(UpstreamError):
    """Every attempt timed out."""

    outcome = "timeout"


class UpstreamFailed(UpstreamError):
    """Connection errors, or a 5xx answer, after the retries."""

    def __init__(self, upstream: str, message: str, response: httpx.Response | None = None):
        super().__init__(upstream, message)
        self.response = response
        self.status = None if response is None else response.status_code


@dataclass(frozen=True)
class _Metrics:
    breaker_state: prometheus_client.Gauge
    requests: prometheus_client.Counter
    retries: prometheus_client.Counter
    seconds: prometheus_client.Histogram


_METRICS: weakref.WeakKeyDictionary[prometheus_client.CollectorRegistry, _Metrics] = (
    weakref.WeakKeyDictionary()
)


def _metrics(registry: prometheus_client.CollectorRegistry) -> _Metrics:
    """The metric objects of ``registry``, created once however many clients share it."""
    if registry not in _METRICS:
        _METRICS[registry] = _Metrics(
            prometheus_client.Gauge(
                "mesh_circuit_breaker_state",
                "Circuit breaker of each upstream: 0 closed, 1 half-open, 2 open",
                ["upstream"],
                registry=registry,
            ),
            prometheus_client.Counter(
                "mesh_client_requests_total",
                "Calls to upstreams by outcome: ok, client_error, failed, timeout, unavailable",
                ["upstream", "method", "outcome"],
                registry=registry,
            ),
            prometheus_client.Counter(
                "mesh_client_retries_total",
                "Attempts made after the first one of a call",
                ["upstream"],
                registry=registry,
            ),
            prometheus_client.Histogram(
                "mesh_client_request_seconds",
                "Duration of the calls that were attempted, retries included",
                ["upstream"],
                registry=registry,
            ),
        )
    return _METRICS[registry]


def _timed_out(exc: Exception) -> bool:
    return isinstance(exc, TimeoutError | httpx.TimeoutException)


@dataclass(frozen=True)
class _Outgoing:
    """One call's request, encoded once for all its attempts."""

    method: str
    url: str
    body: bytes | None
    headers: dict[str, str]


async def _through(
    transport: httpx.AsyncBaseTransport, request: _Outgoing, headers: dict[str, str]
) -> httpx.Response:
    """One exchange through an httpx transport in place of the network (the tests'
    in-process mesh)."""
    outgoing = httpx.Request(request.method, request.url, content=request.body, headers=headers)
    response = await transport.handle_async_request(outgoing)
    try:
        await response.aread()
    finally:
        await response.aclose()
    return httpx.Response(response.status_code, headers=response.headers, content=response.content)


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, UpstreamFailed):
        return exc.status is None or exc.status in RETRYABLE_STATUSES
    return isinstance(exc, UpstreamTimeout)


class MeshClient:
    """Calls the upstream services by name, through their Envoy mesh listeners."""

    def __init__(
        self,
        upstreams: Mapping[str, str],
        *,
        timeout: float = 2.0,
        retries: int = 2,
        breaker_threshold: int = 5,
        breaker_reset_s: float = 10.0,
        registry: prometheus_client.CollectorRegistry | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self._upstreams = {name: url.rstrip("/") for name, url in upstreams.items()}
        self._timeout = timeout
        self._retries = retries
        # Calls go out through aiohttp itself: httpx (even over an aiohttp transport)
        # built a Request and a Response per call, which was most of a call's CPU. A
        # ``transport`` (httpx's interface) replaces the network instead: the in-process
        # mesh of the tests. The deadline of an attempt is asyncio.timeout(timeout): it
        # bounds the whole exchange, body included.
        self._transport = transport
        self._session: aiohttp.ClientSession | None = None
        self._tracer = trace.get_tracer(__name__, tracer_provider=tracer_provider)
        self._follows = follows_parent_sampling(tracer_provider)
        self._metrics = _metrics(prometheus_client.REGISTRY if registry is None else registry)
        self._breakers: dict[str, AsyncCircuitBreaker] = {}
        self._factory = AsyncCircuitBreakerFactory(breaker_threshold, breaker_reset_s)
        self._factory.add_listener(self._on_breaker_event)
        self._trials: set[str] = set()
        for name in self._upstreams:
            self._metrics.breaker_state.labels(name).set(0)

    async def request(
        self,
        upstream: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (per attempt, not for the call)
    ) -> httpx.Response:
        """Send ``method path`` to ``upstream``; a 1xx-4xx answer is returned as it is."""
        url = f"{self._base_url(upstream)}/{path.lstrip('/')}"
        method = method.upper()
        if idempotent is None:
            idempotent = method in IDEMPOTENT_METHODS
        sent = dict(headers or {})
        body = None
        if json is not None:
            body = msgspec.json.encode(json)
            sent["content-type"] = "application/json"
        request = _Outgoing(method, url, body, sent)
        attempts = 1 + self._retries if idempotent else 1
        attempt_timeout = self._timeout if timeout is None else timeout
        outcome: str | None = None  # stays None when the caller cancels the call
        started = time.perf_counter()
        try:
            response = await self._call(upstream, request, attempts, attempt_timeout)
        except UpstreamError as exc:
            outcome = exc.outcome
            raise
        else:
            outcome = "ok" if response.status_code < 400 else "client_error"
            return response
        finally:
            if outcome is not None:
                self._metrics.requests.labels(upstream, method, outcome).inc()
            if outcome not in (None, "unavailable"):
                self._metrics.seconds.labels(upstream).observe(time.perf_counter() - started)

    def breaker_state(self, upstream: str) -> str:
        """``closed``, ``half-open`` (a trial call is in flight) or ``opened``.

        As in purgatory, an open breaker stays ``opened`` past ``breaker_reset_s`` until
        the next call, which becomes the trial.
        """
        self._base_url(upstream)
        breaker = self._breakers.get(upstream)
        state = "closed" if breaker is None else breaker.context.state
        return "half-open" if state == "half-opened" else state

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        if self._transport is not None:
            await self._transport.aclose()

    async def __aenter__(self) -> MeshClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _base_url(self, upstream: str) -> str:
        try:
            return self._upstreams[upstream]
        except KeyError:
            known = ", ".join(sorted(self._upstreams)) or "none"
            raise ValueError(f"unknown upstream {upstream!r}; known: {known}") from None

    async def _call(
        self, upstream: str, request: _Outgoing, attempts: int, attempt_timeout: float
    ) -> httpx.Response:
        """One call through the breaker: only its UpstreamError counts as a failure."""
        breaker = self._breakers.get(upstream)
        if breaker is None:
            breaker = self._breakers[upstream] = await self._factory.get_breaker(upstream)
        # purgatory lets every call through while half-open; one trial is enough.
        if upstream in self._trials:
            raise UpstreamUnavailable(upstream, "circuit breaker half-open, trial in flight")
        try:
            async with breaker:  # raises OpenedState while open
                if breaker.context.state != "closed":
                    self._trials.add(upstream)
                    # purgatory publishes the half-open state only when the trial ends
                    self._metrics.breaker_state.labels(upstream).set(1)
                try:
                    return await self._attempts(upstream, request, attempts, attempt_timeout)
                finally:
                    self._trials.discard(upstream)
        except OpenedState:
            raise UpstreamUnavailable(upstream, "circuit breaker open") from None

    async def _attempts(
        self, upstream: str, request: _Outgoing, attempts: int, attempt_timeout: float
    ) -> httpx.Response:
        """Up to ``attempts`` attempts, a jittered backoff between them (a loop of our own:
        tenacity's machinery cost ~24 µs a call here, a tenth of a call's client CPU)."""
        timeouts = 0
        for made in range(1, attempts + 1):
            try:
                return await self._attempt(upstream, request, attempt_timeout)
            except UpstreamTimeout as exc:
                timeouts += 1
                failure: UpstreamError = exc
            except UpstreamFailed as exc:
                failure = exc
            if made == attempts or not _retryable(failure):
                if isinstance(failure, UpstreamTimeout) and timeouts < made:
                    raise UpstreamFailed(
                        upstream, f"{made} attempts failed, the last timed out"
                    ) from failure
                raise failure
            self._metrics.retries.labels(upstream).inc()
            await asyncio.sleep(_backoff(made))
        raise AssertionError("unreachable")  # pragma: no cover - attempts >= 1

    async def _attempt(
        self, upstream: str, request: _Outgoing, attempt_timeout: float
    ) -> httpx.Response:
        try:
            async with asyncio.timeout(attempt_timeout):
                response = await self._send(request)
        except TimeoutError as exc:
            raise UpstreamTimeout(upstream, f"no answer within {attempt_timeout}s") from exc
        except (httpx.TransportError, aiohttp.ClientError) as exc:
            if _timed_out(exc):
                raise UpstreamTimeout(upstream, f"{type(exc).__name__}: {exc}") from exc
            raise UpstreamFailed(upstream, f"{type(exc).__name__}: {exc}") from exc
        if response.status_code >= 500:
            raise UpstreamFailed(upstream, f"HTTP {response.status_code}", response)
        return response

    async def _send(self, request: _Outgoing) -> httpx.Response:
        """One attempt in a CLIENT span whose context travels in ``traceparent``, with the
        attributes of OpenTelemetry's httpx instrumentation (built only when sampled); in
        an unsampled trace, no span: the caller's context travels on."""
        with span_or_parent(
            self._tracer, self._follows, request.method, kind=SpanKind.CLIENT
        ) as span:
            headers = dict(request.headers)
            propagate.inject(headers)
            if span.is_recording():
                span.set_attribute("http.method", request.method)
                span.set_attribute("http.url", request.url)
            if self._transport is None:
                response = await self._exchange(request, headers)
            else:
                response = await _through(self._transport, request, headers)
            if span.is_recording():
                span.set_attribute("http.status_code", response.status_code)
                if response.status_code >= 400:  # a client span's error, as the spec has it
                    span.set_status(Status(StatusCode.ERROR))
            return response

    async def _exchange(self, request: _Outgoing, headers: dict[str, str]) -> httpx.Response:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                cookie_jar=aiohttp.DummyCookieJar(),  # nothing to keep between services
                timeout=aiohttp.ClientTimeout(total=None),  # the attempt's deadline rules
                trust_env=False,  # no proxy between a service and its local Envoy
            )
        async with self._session.request(
            request.method, request.url, data=request.body, headers=headers
        ) as answer:
            content = await answer.read()
        return httpx.Response(answer.status, headers=answer.raw_headers, content=content)

    def _on_breaker_event(self, name: str, kind: str, event: Event) -> None:
        if isinstance(event, ContextChanged):
            self._metrics.breaker_state.labels(name).set(_GAUGE_VALUE[event.state])
