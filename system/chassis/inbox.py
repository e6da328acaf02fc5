"""The inbox: consume events so that at-least-once delivery has exactly-once effects.

:class:`EventConsumer` reads whole topics with aiokafka (manual offset commits, from the
earliest offset for a new group). For the messages of one fetched partition batch, in
ONE database transaction, it inserts an :class:`InboxEntry` ``(consumer, event_id)`` per
event and runs the handler registered for each event's type, in order; the Kafka offsets
are committed only after that transaction commits. A redelivered event finds its inbox
row and its handler is skipped. If anything in the batch fails, the batch is rolled back
and processed again one message per transaction, with the retries below.

Choices:

* **Undecodable or unknown messages** (bad JSON, unregistered type or version) are
  logged, counted in ``inbox_rejected_total`` and skipped: retrying cannot fix them, and
  one bad message must not stop a partition.
* **Types without a handler** are acknowledged without touching the database (services
  subscribe to whole topics and use a few types of each).
* **A failing handler** is rolled back and retried in place, with exponential backoff,
  up to ``max_attempts`` times; this blocks the partition meanwhile, which keeps events of
  one key in order. After the last attempt the message is logged, counted in
  ``inbox_failed_total`` and skipped *without* an inbox row (so a deliberate replay can
  still apply it). There is no dead-letter topic: the failure is visible in the logs, the
  metric and the CONSUMER span's error status. A batch redone one by one is counted in
  ``inbox_batch_retries_total``: on PostgreSQL a steady rate of them means transactions
  that deadlock or conflict.
* **Offsets** are committed for every partition at once, at most every
  ``commit_interval`` seconds (0.25 by default; 0 commits after each fetched batch), when
  the consumer is idle, and when it stops; never past a message whose transaction has not
  committed. A crash or rebalance in between means a redelivery, which the inbox absorbs.
  Under load a commit per fetched batch was several offset commits a second per consumer,
  each a request to the broker and its reply. On stop, the batch being
  processed finishes (or its retries are abandoned and it is redelivered at the next
  start).
* **Tracing**: the handler runs inside a CONSUMER span ``"<topic> process"`` whose parent
  is the producer's span (W3C context from the Kafka headers), so events staged by the
  handler continue the same trace.
* **Batched handlers** (:class:`Batched`) get every consecutive event of a fetched batch
  that they handle in one call, so a projection writes them in one statement (the
  analytics projection ran one insert per event, six per order). Per-event handlers keep
  their place in between: events are applied in the order they were fetched. A batched
  call runs in the span of its first message.

Handlers receive the open session and must not commit it; on SQLite they should not wait
on the network either, since the engine's one connection is held meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

from advanced_alchemy.base import DefaultBase
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge
from sqlalchemy import String, bindparam, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from system.chassis.db import Executor, insert_if_absent, table_of
from system.chassis.prepared import Prepared
from system.chassis.trace_context import extract, follows_parent_sampling, unsampled
from system.events import Event, EventError, decode

__all__ = [
    "Batched",
    "ConsumerRecordLike",
    "EventConsumer",
    "Handler",
    "InboxEntry",
    "Outcome",
]

log = logging.getLogger("system.chassis.inbox")

TRACER_NAME = "system.chassis.inbox"

Handler = Callable[[AsyncSession, Event[Any]], Awaitable[None]]
"""``async def handle(session, event) -> None``: apply the event's effects in ``session``."""


@dataclass(frozen=True)
class Batched:
    """``async def apply(session, events) -> None``, registered as a handler: applies the
    effects of several events at once (they are in fetch order, never duplicates)."""

    apply: Callable[[AsyncSession, Sequence[Event[Any]]], Awaitable[None]]


AnyHandler = Handler | Batched
"""What an event type is registered with."""


async def _run_handler(handler: AnyHandler, session: AsyncSession, event: Event[Any]) -> None:
    if isinstance(handler, Batched):
        await handler.apply(session, [event])
    else:
        await handler(session, event)


class InboxEntry(DefaultBase):
    """An event a consumer has processed: its effects committed with this row."""

    __tablename__ = "inbox"

    consumer: Mapped[str] = mapped_column(String(200), primary_key=True)
    event_id: Mapped[UUID] = mapped_column(primary_key=True)
    event_type: Mapped[str] = mapped_column(String(100))
    processed_at: Mapped[datetime]


_INBOX = table_of(InboxEntry)
_SEEN_IDS = 32
"""Event ids per lookup of the inbox rows a batch already has."""
_SEEN = Prepared(
    select(_INBOX.c.event_id).where(
        _INBOX.c.consumer == bindparam("consumer"),
        _INBOX.c.event_id.in_(
            [bindparam(f"id{n}", type_=_INBOX.c.event_id.type) for n in range(_SEEN_IDS)]
        ),
    )
)
"""A fixed number of ids (a short chunk is padded with its last id): an expanding ``IN``
is rendered and compiled again for every batch (``Prepared`` hands it to SQLAlchemy);
a batch's lookup transaction of 100 ids took 5-12% less CPU this way here."""
_INSERT = Prepared(insert(_INBOX))
"""Built once: a statement built per batch costs more than running it."""


def _seen_in(session: Executor, consumer: str, ids: Sequence[UUID]) -> set[UUID]:
    """Which of ``ids`` ``consumer``'s inbox holds already."""
    seen: set[UUID] = set()
    for start in range(0, len(ids), _SEEN_IDS):
        chunk = list(ids[start : start + _SEEN_IDS])
        chunk += [chunk[-1]] * (_SEEN_IDS - len(chunk))
        params = {f"id{n}": event_id for n, event_id in enumerate(chunk)}
        seen.update(_SEEN(session, {"consumer": consumer, **params}).scalars())
    return seen


def _inbox_row(consumer: str, event: Event[Any], now: datetime) -> dict[str, Any]:
    """The inbox row recording that ``consumer`` processed ``event``."""
    return {
        "consumer": consumer,
        "event_id": event.id,
        "event_type": event.type,
        "processed_at": now,
    }


def _record_in(
    session: Executor, consumer: str, events: Sequence[Event[Any]], now: datetime
) -> list[bool]:
    """Insert the inbox rows of ``events`` not seen before (nor earlier in ``events``);
    per event, whether it is fresh."""
    seen = _seen_in(session, consumer, [event.id for event in events])
    fresh: list[bool] = []
    rows: list[dict[str, Any]] = []
    for event in events:
        if event.id in seen:
            fresh.append(False)
            continue
        seen.add(event.id)
        fresh.append(True)
        rows.append(_inbox_row(consumer, event, now))
    if rows:
        _INSERT(session, rows)
    return fresh


class ConsumerRecordLike(Protocol):
    """The fields of :class:`aiokafka.structs.ConsumerRecord` the consumer reads."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


class Outcome(enum.StrEnum):
    """What :meth:`EventConsumer.process` did with one message."""

    PROCESSED = "processed"
    DUPLICATE = "duplicate"
    UNHANDLED = "unhandled"
    """No handler for the type: acknowledged and skipped."""
    REJECTED = "rejected"
    """Undecodable, or an unknown type/version: acknowledged and skipped."""
    FAILED = "failed"
    """The handler failed on every attempt: acknowledged and skipped."""
    ABORTED = "aborted"
    """The consumer was stopped during retries: not acknowledged (redelivered later)."""


class _Metrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        labels = ["consumer", "event_type"]
        self.processed = Counter(
            "inbox_processed", "Events whose handler committed.", labels, registry=registry
        )
        self.duplicates = Counter(
            "inbox_duplicates",
            "Redelivered events skipped by the inbox.",
            labels,
            registry=registry,
        )
        self.failed = Counter(
            "inbox_failed",
            "Events skipped after the handler failed on every attempt.",
            labels,
            registry=registry,
        )
        self.rejected = Counter(
            "inbox_rejected",
            "Messages skipped as undecodable or of an unknown type.",
            ["consumer", "topic"],
            registry=registry,
        )
        self.batch_retries = Counter(
            "inbox_batch_retries",
            "Fetched batches rolled back and processed again one message at a time (a "
            "handler failed, or the database refused the transaction: a deadlock, a "
            "serialization conflict).",
            ["consumer"],
            registry=registry,
        )
        self.lag = Gauge(
            "inbox_consumer_lag",
            "Messages behind the partition's high watermark after the last batch.",
            ["consumer", "topic", "partition"],
            registry=registry,
        )


_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, _Metrics] = weakref.WeakKeyDictionary()


def _metrics(registry: CollectorRegistry | None) -> _Metrics:
    if registry is None:
        return _Metrics(None)
    if registry not in _METRICS:
        _METRICS[registry] = _Metrics(registry)
    return _METRICS[registry]


_CLOSE_GRACE = 10.0
"""Seconds a stopping consumer may spend leaving its group."""


def _carrier(headers: Iterable[tuple[str, bytes]] | None) -> dict[str, str]:
    return {name: value.decode("utf-8", "replace") for name, value in headers or () if value}


class EventConsumer:
    """Consume ``topics`` as ``group_id`` and apply ``handlers`` exactly once per event.

    ``await consumer.start()`` returns at once (the background task connects, retrying
    while Kafka is unreachable); ``await consumer.stop()`` finishes the message in hand.
    :meth:`process` is the whole per-message logic, callable without Kafka.
    """

    def __init__(
        self,
        session_maker: async_sessionmaker[AsyncSession],
        bootstrap: str,
        group_id: str,
        topics: Sequence[str],
        handlers: Mapping[str, AnyHandler],
        *,
        name: str | None = None,
        max_attempts: int = 5,
        retry_backoff: float = 0.2,
        max_retry_backoff: float = 5.0,
        batch: int = 100,
        commit_interval: float = 0.25,
        tracer_provider: TracerProvider | None = None,
        registry: CollectorRegistry | None = REGISTRY,
        kafka_options: Mapping[str, Any] | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._session_maker = session_maker
        self._bootstrap = bootstrap
        self.group_id = group_id
        self.topics = tuple(topics)
        self._handlers = dict(handlers)
        self.name = name or group_id
        """The inbox's ``consumer`` column: events are deduplicated per name."""
        self._max_attempts = max_attempts
        self._retry_backoff = retry_backoff
        self._max_retry_backoff = max_retry_backoff
        self._batch = batch
        self._commit_interval = commit_interval
        self._uncommitted: dict[Any, int] = {}
        """Per partition, the next offset to commit (past the last processed message)."""
        self._committed_at = 0.0
        self._tracer = trace.get_tracer(TRACER_NAME, tracer_provider=tracer_provider)
        self._follows = follows_parent_sampling(tracer_provider)
        self._metrics = _metrics(registry)
        self._kafka_options = dict(kafka_options or {})
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._assigned = asyncio.Event()
        self._consumer: Any = None

    # -- life cycle ----------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def connected(self) -> bool:
        """The Kafka consumer has started (for readiness checks)."""
        return self._consumer is not None

    async def start(self) -> None:
        """Start the background task (returns at once; it connects, retrying, by itself)."""
        if self.running:
            return
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name=f"event-consumer-{self.name}")

    async def stop(self, *, grace: float = 10.0) -> None:
        """Finish the message in hand (up to ``grace`` seconds), then leave the group."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), grace)
        except TimeoutError:
            log.warning("consumer %s did not stop within %.1fs; cancelling it", self.name, grace)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> EventConsumer:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def wait_assigned(self) -> None:
        """Wait until the group gave this consumer partitions (bound it with a timeout)."""
        await self._assigned.wait()

    # -- the loop ------------------------------------------------------------------------
    def _new_consumer(self) -> Any:
        from aiokafka import AIOKafkaConsumer  # noqa: PLC0415 - loaded when consuming

        options: dict[str, Any] = {
            "bootstrap_servers": self._bootstrap,
            "group_id": self.group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "client_id": f"{self.name}-consumer",
        }
        options.update(self._kafka_options)
        return AIOKafkaConsumer(*self.topics, **options)

    async def _connect(self) -> Any:
        backoff = self._retry_backoff
        while not self._stopping.is_set():
            consumer = self._new_consumer()
            try:
                await consumer.start()
            except Exception as exc:
                with contextlib.suppress(Exception):
                    await consumer.stop()
                log.warning("consumer %s: cannot reach Kafka (%s); retrying", self.name, exc)
                await self._pause(random.uniform(backoff / 2, backoff))  # noqa: S311
                backoff = min(backoff * 2, self._max_retry_backoff)
                continue
            return consumer
        return None

    async def _pause(self, delay: float) -> bool:
        """Sleep ``delay`` seconds; ``False`` if the consumer is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)
        return not self._stopping.is_set()

    async def _run(self) -> None:
        self._consumer = consumer = await self._connect()
        if consumer is None:
            return
        try:
            while not self._stopping.is_set():
                try:
                    batches = await consumer.getmany(timeout_ms=200, max_records=self._batch)
                except Exception:
                    log.exception("consumer %s: fetch failed", self.name)
                    await self._pause(self._retry_backoff)
                    continue
                if consumer.assignment():
                    self._assigned.set()
                if batches and not self._stopping.is_set():
                    await self._consume(consumer, batches)
                elif self._uncommitted:
                    await self._commit(consumer)  # idle: nothing processed stays uncommitted
        finally:
            self._consumer = None
            if self._uncommitted:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._commit(consumer), _CLOSE_GRACE)
            try:
                await asyncio.wait_for(consumer.stop(), _CLOSE_GRACE)
            except Exception as exc:  # Kafka gone: leaving the group cannot complete
                log.warning("consumer %s: closing the Kafka consumer failed: %r", self.name, exc)

    async def _consume(self, consumer: Any, batches: Mapping[Any, Sequence[Any]]) -> None:
        """Everything one fetch returned, over all partitions, as one batch; then its
        offsets are due, for all of them at once (a commit per partition per fetch was a
        good part of the consumer's and the broker's CPU under load), at the next
        :meth:`_commit`."""
        fetched = [(tp, record) for tp, records in batches.items() for record in records]
        outcomes = await self.process_batch([record for _, record in fetched])
        done: dict[Any, int] = {}
        aborted: set[Any] = set()
        for (tp, record), outcome in zip(fetched, outcomes, strict=True):
            if outcome is Outcome.ABORTED:
                aborted.add(tp)
            elif tp not in aborted:
                done[tp] = record.offset
        if not done:
            return
        self._uncommitted.update({tp: offset + 1 for tp, offset in done.items()})
        if asyncio.get_running_loop().time() - self._committed_at >= self._commit_interval:
            await self._commit(consumer)
        for tp, offset in done.items():
            highwater = consumer.highwater(tp)
            if highwater is not None:
                self._metrics.lag.labels(self.name, tp.topic, str(tp.partition)).set(
                    max(0, highwater - offset - 1)
                )

    async def _commit(self, consumer: Any) -> None:
        """Commit the offsets processed since the last commit, of the partitions this
        consumer still holds (a rebalance may have taken some: their new owner starts from
        the last commit, and the inbox absorbs what it redelivers)."""
        held = consumer.assignment()
        offsets = {tp: offset for tp, offset in self._uncommitted.items() if tp in held}
        self._uncommitted.clear()
        self._committed_at = asyncio.get_running_loop().time()
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except Exception as exc:  # e.g. revoked in a rebalance: redelivery is absorbed
            log.warning("consumer %s: offset commit failed: %s", self.name, exc)

    # -- a batch of messages -------------------------------------------------------------
    async def process_batch(self, records: Sequence[ConsumerRecordLike]) -> list[Outcome]:
        """Handle fetched messages in ONE transaction: the inbox rows of the batch
        looked up (32 ids a query), one insert of its new ones, every handler in order, one
        commit.

        Per message it is what :meth:`process` does, at a fraction of the cost (a
        transaction per event was most of a consumer's CPU). Each message keeps its own
        CONSUMER span, current while its handler runs, ended once the batch commits. If
        anything fails — a handler, the commit — the transaction is rolled back, those
        spans are dropped unended (never exported), and the batch is processed again
        message by message through :meth:`process`, with its retries and skips.
        """
        outcomes: dict[int, Outcome] = {}
        pending: list[tuple[int, Event[Any], AnyHandler, Span]] = []
        for index, record in enumerate(records):
            span = self._start_span(record)
            try:
                event = decode(record.value or b"")
            except EventError as exc:
                outcomes[index] = self._reject(span, record, exc)
                span.end()
                continue
            self._describe(span, event)
            handler = self._handlers.get(event.type)
            if handler is None:
                outcomes[index] = self._done(span, Outcome.UNHANDLED)
                span.end()
                continue
            pending.append((index, event, handler, span))
        if pending:
            try:
                applied = await self._apply_batch(pending)
            except Exception as exc:
                log.info(
                    "consumer %s: a batch of %d failed (%r); processing it one by one",
                    self.name,
                    len(records),
                    exc,
                )
                self._metrics.batch_retries.labels(self.name).inc()
                return [outcomes.get(i) or await self.process(r) for i, r in enumerate(records)]
            for (index, event, _, span), outcome in zip(pending, applied, strict=True):
                counter = (
                    self._metrics.processed
                    if outcome is Outcome.PROCESSED
                    else self._metrics.duplicates
                )
                counter.labels(self.name, event.type).inc()
                outcomes[index] = self._done(span, outcome)
                span.end()
        return [outcomes[i] for i in range(len(records))]

    async def _apply_batch(
        self, pending: Sequence[tuple[int, Event[Any], AnyHandler, Span]]
    ) -> list[Outcome]:
        events = [event for _, event, _, _ in pending]
        async with self._session_maker() as session, session.begin():
            fresh = await session.run_sync(_record_in, self.name, events, datetime.now(UTC))
            outcomes = [Outcome.PROCESSED if new else Outcome.DUPLICATE for new in fresh]
            run: list[tuple[Batched, Span, Event[Any]]] = []  # one batched handler's events
            for (_, event, handler, span), outcome in zip(pending, outcomes, strict=True):
                if outcome is not Outcome.PROCESSED:
                    continue
                if run and handler is not run[0][0]:
                    await _apply_run(session, run)
                    run = []
                if isinstance(handler, Batched):
                    run.append((handler, span, event))
                    continue
                with trace.use_span(span, record_exception=False):
                    await handler(session, event)
            if run:
                await _apply_run(session, run)
        return outcomes

    # -- one message ---------------------------------------------------------------------
    def _start_span(self, record: ConsumerRecordLike) -> Span:
        """A CONSUMER span ``"<topic> process"``, child of the producer's context."""
        parent = extract(_carrier(record.headers or ()))
        if self._follows and unsampled(parent):
            # an unsampled trace: the producer's context is current while the handler runs
            # (events it stages carry it on), and no CONSUMER span is built
            return trace.get_current_span(parent)
        attributes: dict[str, str | int] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": record.topic,
            "messaging.destination.partition.id": str(record.partition),
            "messaging.kafka.offset": record.offset,
            "messaging.consumer.group.name": self.group_id,
        }
        if record.key is not None:
            attributes["messaging.kafka.message.key"] = record.key.decode("utf-8", "replace")
        return self._tracer.start_span(
            f"{record.topic} process",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        )

    def _describe(self, span: Span, event: Event[Any]) -> None:
        span.set_attribute("messaging.message.id", str(event.id))
        span.set_attribute("event.type", event.type)
        span.set_attribute("event.version", event.version)

    def _reject(self, span: Span, record: ConsumerRecordLike, exc: EventError) -> Outcome:
        log.warning(
            "consumer %s: rejected %s[%d]@%d: %s",
            self.name,
            record.topic,
            record.partition,
            record.offset,
            exc,
        )
        self._metrics.rejected.labels(self.name, record.topic).inc()
        span.set_status(Status(StatusCode.ERROR, str(exc)))
        return self._done(span, Outcome.REJECTED)

    async def process(self, record: ConsumerRecordLike) -> Outcome:
        """Decode, deduplicate and handle one message in a CONSUMER span."""
        with trace.use_span(
            self._start_span(record),
            end_on_exit=True,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                event = decode(record.value or b"")
            except EventError as exc:
                return self._reject(span, record, exc)
            self._describe(span, event)
            handler = self._handlers.get(event.type)
            if handler is None:
                return self._done(span, Outcome.UNHANDLED)
            return await self._handle(span, event, handler)

    def _done(self, span: Span, outcome: Outcome) -> Outcome:
        span.set_attribute("inbox.outcome", outcome.value)
        return outcome

    async def _handle(self, span: Span, event: Event[Any], handler: AnyHandler) -> Outcome:
        backoff = self._retry_backoff
        for attempt in range(1, self._max_attempts + 1):
            try:
                outcome = await self._apply(event, handler)
            except Exception as exc:
                span.record_exception(exc, attributes={"inbox.attempt": attempt})
                if attempt == self._max_attempts:
                    log.exception(
                        "consumer %s: %s %s failed %d times; skipping it",
                        self.name,
                        event.type,
                        event.id,
                        attempt,
                    )
                    self._metrics.failed.labels(self.name, event.type).inc()
                    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                    return self._done(span, Outcome.FAILED)
                log.warning(
                    "consumer %s: %s %s failed (attempt %d/%d): %r",
                    self.name,
                    event.type,
                    event.id,
                    attempt,
                    self._max_attempts,
                    exc,
                )
                if not await self._pause(random.uniform(backoff / 2, backoff)):  # noqa: S311
                    return self._done(span, Outcome.ABORTED)
                backoff = min(backoff * 2, self._max_retry_backoff)
                continue
            counter = (
                self._metrics.processed
                if outcome is Outcome.PROCESSED
                else self._metrics.duplicates
            )
            counter.labels(self.name, event.type).inc()
            return self._done(span, outcome)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _apply(self, event: Event[Any], handler: AnyHandler) -> Outcome:
        """The inbox row and the handler's effects, in one transaction (a row already
        there, or inserted meanwhile by another consumer, means a duplicate)."""
        async with self._session_maker() as session, session.begin():
            if not await insert_if_absent(
                session, InboxEntry, _inbox_row(self.name, event, datetime.now(UTC))
            ):
                return Outcome.DUPLICATE
            await _run_handler(handler, session, event)
        return Outcome.PROCESSED


async def _apply_run(session: AsyncSession, run: list[tuple[Batched, Span, Event[Any]]]) -> None:
    """Consecutive events of one batched handler, in the span of the first."""
    handler, span, _ = run[0]
    with trace.use_span(span, record_exception=False):
        await handler.apply(session, [event for _, _, event in run])
