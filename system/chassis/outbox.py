"""The transactional outbox: events are rows written with the state change, then relayed.

A service calls :func:`stage` inside the transaction that changes its state; the row
commits or rolls back with it, so an event is published if and only if its state change
happened. :class:`OutboxRelay` is the background task that sends unpublished rows to
Kafka (idempotent producer, ``acks=all``) and marks them published.

Guarantees and choices:

* **At least once.** A row is marked published only after Kafka acknowledged it; a crash
  between the two re-sends it, so consumers deduplicate by event id (the inbox).
* **Order per key.** Rows are read in insertion order (``id``). A cycle's rows go out as
  one record batch per partition, in that order, all in one produce request; Kafka
  appends a batch whole or not at all, so a key's events of one cycle (a key always
  maps to one partition) are published together and in order, or not at all. A failed
  batch stays for the next attempt, which starts again at the oldest unpublished row;
  the batches acknowledged meanwhile are marked. So a later event of a key is never
  published before an earlier one. Several relays on one database (replicas sharing
  it) take turns (:mod:`system.chassis.outbox_turn`, ``turns``), so a row goes out once;
  without turns both may send it, never an earlier row after a later one.
* **Kafka unavailable.** Rows stay unpublished until Kafka acknowledges them. If the
  producer cannot start, or a send fails, the producer is closed and re-created -- the
  factory is called again -- after an exponential, jittered backoff (``min_backoff`` ..
  ``max_backoff``), and the next attempt starts again at the oldest unpublished row. An
  idempotent producer never fails a send while the broker is merely unreachable: it
  retries until the broker is back, then delivers once and in order. The relay waits for
  it, and after ``stall_after`` seconds without an acknowledgement reports the stall
  (``last_error``, ``outbox_publish_failures_total``, a warning). ``stop()`` waits for
  it at most until its grace runs out, then abandons those sends (their rows stay for
  the next start; a send abandoned after reaching Kafka is sent again -- a duplicate the
  inbox absorbs).
* **Wake-up.** A commit of a session that staged events wakes every running relay of the
  process (SQLAlchemy ``after_commit``, or :func:`~system.chassis.db.after_commit`);
  otherwise the relay polls every ``poll_interval`` seconds, which also picks up rows of
  other processes. A woken relay waits ``linger`` seconds before it reads, so that the
  commits of that moment go out in the same cycle: under load a relay woke for nearly
  every commit, and each cycle costs a read, a produce request and its acknowledgement,
  and a marking transaction, for a handful of rows.
* **Tracing.** :func:`stage` captures the current OpenTelemetry context into the row; the
  relay starts a PRODUCER span ``"<topic> publish"`` as its child and sends *that* span's
  context in the Kafka headers, with ``event-type``, ``event-version`` and ``event-id``.
* **Housekeeping.** Published rows older than ``retain_published`` seconds are deleted
  every ``purge_interval`` seconds.

Keep sessions short: on SQLite the engine has a single connection, and the relay never
holds a session while it waits for Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import weakref
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from advanced_alchemy.base import BigIntBase
from advanced_alchemy.types import JsonB
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy import (
    Connection,
    Index,
    LargeBinary,
    String,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy import event as sa_event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, Session, mapped_column

from system.chassis.db import (
    Executor,
    after_commit,
    forget_at_transaction_end,
    in_transaction,
    table_of,
)
from system.chassis.outbox_turn import Turns
from system.chassis.prepared import Prepared
from system.chassis.trace_context import extract, follows_parent_sampling, unsampled
from system.events import Event, encode

__all__ = [
    "OutboxMessage",
    "OutboxRelay",
    "Producer",
    "ProducerFactory",
    "kafka_producer_factory",
    "stage",
    "stage_in",
]

log = logging.getLogger("system.chassis.outbox")

TRACER_NAME = "system.chassis.outbox"
_STAGED = "system.outbox.staged"


# -- the table ---------------------------------------------------------------------------
class OutboxMessage(BigIntBase):
    """One event waiting to be (or already) published; ``id`` orders the outbox."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index(
            "ix_outbox_unpublished",
            "id",
            sqlite_where=text("published_at IS NULL"),
            postgresql_where=text("published_at IS NULL"),
        ),
        # the purge's index holds published rows only: staging a row does not touch it
        Index(
            "ix_outbox_published_at",
            "published_at",
            sqlite_where=text("published_at IS NOT NULL"),
            postgresql_where=text("published_at IS NOT NULL"),
        ),
        {"sqlite_autoincrement": True},
    )

    event_id: Mapped[str] = mapped_column(String(36))
    topic: Mapped[str] = mapped_column(String(255))
    key: Mapped[str] = mapped_column(String(255))
    event_type: Mapped[str] = mapped_column(String(100))
    event_version: Mapped[int]
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[dict[str, str]] = mapped_column(JsonB, default=dict)
    """Trace context (W3C ``traceparent``/``tracestate``, ``baggage``) at staging time."""
    created_at: Mapped[datetime]
    published_at: Mapped[datetime | None]


_OUTBOX = table_of(OutboxMessage)
_INSERT = Prepared(insert(_OUTBOX))


async def stage(session: AsyncSession, event: Event[Any]) -> None:
    """Add ``event`` to the outbox in ``session``'s transaction (commit publishes it).

    The current OpenTelemetry context is captured now, so the publish span -- and every
    consumer's span -- joins the trace of the code that staged the event. The row is
    written at once by a Core INSERT built once (the ORM's unit of work for it cost more
    than the insert), so rows keep the order they were staged in, and a savepoint rolled
    back takes its own rows with it.
    """
    await session.run_sync(stage_in, event)


def stage_in(session: Executor, event: Event[Any]) -> None:
    """:func:`stage` for code that runs in one greenlet: a Core connection of
    :func:`~system.chassis.db.in_transaction`, or :meth:`AsyncSession.run_sync`'s
    session (each awaited statement starts a greenlet, at ~10 µs each)."""
    _INSERT(session, _row(event))
    if isinstance(session, Session):
        session.info[_STAGED] = True
    else:
        after_commit(session, _wake_relays)


def _row(event: Event[Any]) -> dict[str, Any]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return {
        "event_id": str(event.id),
        "topic": event.topic,
        "key": event.key,
        "event_type": event.type,
        "event_version": event.version,
        "payload": encode(event),
        "headers": carrier,
        "created_at": datetime.now(UTC),
        "published_at": None,
    }


_RELAYS: weakref.WeakSet[OutboxRelay] = weakref.WeakSet()


def _wake_relays() -> None:
    for relay in list(_RELAYS):
        relay.notify()


def _after_commit(session: Session) -> None:
    if session.info.pop(_STAGED, False):
        _wake_relays()


sa_event.listen(Session, "after_commit", _after_commit)
forget_at_transaction_end(_STAGED)  # a rollback publishes nothing


# -- Kafka -------------------------------------------------------------------------------
class BatchBuilder(Protocol):
    """What the relay needs of aiokafka's ``BatchBuilder``."""

    def append(
        self,
        *,
        timestamp: int | None,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> Any | None:
        """The record's metadata, or ``None`` when the batch is full."""


class Producer(Protocol):
    """What the relay needs of :class:`aiokafka.AIOKafkaProducer`."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def partitions_for(self, topic: str) -> set[int]: ...

    def create_batch(self) -> BatchBuilder: ...

    async def send_batch(
        self, batch: BatchBuilder, topic: str, *, partition: int
    ) -> Awaitable[Any]: ...


ProducerFactory = Callable[[], Producer]
"""Called in the relay's event loop each time it needs a new producer."""


BATCH_BYTES = 256 * 1024
"""Bytes a produce request may carry per partition. aiokafka sends one request at a time
to a broker, with 16 KiB per partition by default (~16-30 events): a relay cycle's 100
events could take several round trips. With 256 KiB they take one; under the broker's
1 MiB message limit for a topic's three partitions together. ``benchmarks/relay_drain.py``
(Kafka 20 ms away each way): 1.0-1.2x the drain rate, 0.79-0.97x the CPU per event."""


def kafka_producer_factory(
    bootstrap: str,
    *,
    request_timeout_ms: int = 10_000,
    max_batch_size: int = BATCH_BYTES,
    **options: Any,
) -> ProducerFactory:
    """An idempotent ``acks=all`` :class:`~aiokafka.AIOKafkaProducer` for ``bootstrap``."""
    from aiokafka import AIOKafkaProducer  # noqa: PLC0415 - loaded when a relay needs it

    def factory() -> Producer:
        producer: Producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            enable_idempotence=True,
            request_timeout_ms=request_timeout_ms,
            max_batch_size=max_batch_size,
            **options,
        )
        return producer

    return factory


# -- metrics -----------------------------------------------------------------------------
class _Metrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.pending = Gauge(
            "outbox_pending", "Outbox rows not yet published to Kafka.", registry=registry
        )
        self.published = Counter(
            "outbox_published", "Events the outbox relay published.", ["topic"], registry=registry
        )
        self.failures = Counter(
            "outbox_publish_failures",
            "Outbox relay attempts that failed, or stalled waiting for Kafka.",
            registry=registry,
        )
        self.lag = Histogram(
            "outbox_lag_seconds",
            "Seconds from staging an event to Kafka acknowledging it.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=registry,
        )


_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, _Metrics] = weakref.WeakKeyDictionary()


def _metrics(registry: CollectorRegistry | None) -> _Metrics:
    if registry is None:
        return _Metrics(None)  # unregistered: counted, never exported
    if registry not in _METRICS:
        _METRICS[registry] = _Metrics(registry)
    return _METRICS[registry]


# -- the relay ---------------------------------------------------------------------------
_ROW_COLUMNS = tuple(
    _OUTBOX.c[name]
    for name in (
        "id",
        "event_id",
        "topic",
        "key",
        "event_type",
        "event_version",
        "payload",
        "headers",
        "created_at",
    )
)
# Built once: a statement built per cycle costs more than running it.
_COUNT_UNPUBLISHED = Prepared(select(func.count()).where(_OUTBOX.c.published_at.is_(None)))
_MARK_PUBLISHED = Prepared(update(_OUTBOX).where(_OUTBOX.c.id == bindparam("the_id")))
"""One parameter set per row (an expanding ``IN`` would be rendered again every cycle, on
SQLAlchemy's path)."""


def _mark(session: Connection, ids: list[Any], now: datetime, turns: Turns | None) -> None:
    if ids:
        _MARK_PUBLISHED(session, [{"the_id": row_id, "published_at": now} for row_id in ids])
    if turns is not None:
        turns.give_back(session)


_CLOSE_GRACE = 2.0
"""Seconds for each step of closing a producer."""
_TICK = 0.25
"""Seconds between checks of the stop deadline while a wave of sends is in flight."""


_TURN_WAIT = 0.01
"""Seconds before asking again for the turn another relay holds (without a linger)."""


class _NotOurTurn(Exception):
    """Another relay of the same outbox is in its cycle."""


class _Abandoned(Exception):
    """A send the relay stopped waiting for (stop deadline reached)."""


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a delivery's outcome as seen (the relay may have stopped awaiting it)."""
    if not future.cancelled():
        future.exception()


class _PublishFailed(Exception):
    """A send (or the producer's start) failed; ``acknowledged`` rows made it anyway."""

    def __init__(self, cause: BaseException, acknowledged: Sequence[Any] = ()) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause
        self.acknowledged = list(acknowledged)


class _Partitioner:
    """Where keys go: murmur2 of a key's bytes over its topic's partitions, as Kafka's
    Java clients and aiokafka's ``send`` place them; each topic's partitions asked of the
    producer once per cycle."""

    def __init__(self, producer: Producer) -> None:
        from aiokafka.partitioner import DefaultPartitioner  # noqa: PLC0415 - with the producer

        self._producer = producer
        self._place = DefaultPartitioner()
        self._partitions: dict[str, list[int]] = {}

    async def __call__(self, topic: str, key: str) -> int:
        partitions = self._partitions.get(topic)
        if partitions is None:
            partitions = self._partitions[topic] = sorted(
                await self._producer.partitions_for(topic)
            )
        return int(self._place(key.encode(), partitions, partitions))


class _Batch:
    """One partition's record batch of a cycle: its rows, and their PRODUCER spans."""

    __slots__ = ("builder", "rows", "spans")

    def __init__(self, builder: BatchBuilder) -> None:
        self.builder = builder
        self.rows: list[Any] = []
        self.spans: list[Span | None] = []

    def finish(self, metadata: Any, error: BaseException | None) -> None:
        """End the spans: the record's partition and offset, or the batch's error."""
        for index, span in enumerate(self.spans):
            if span is None:
                continue
            if error is not None:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            else:
                with contextlib.suppress(AttributeError, TypeError, ValueError):
                    span.set_attribute(
                        "messaging.destination.partition.id", str(metadata.partition)
                    )
                    span.set_attribute("messaging.kafka.offset", int(metadata.offset) + index)
            span.end()


class OutboxRelay:
    """Relay unpublished outbox rows to Kafka from a background task.

    ``producer`` is a bootstrap address (``"host:port"``) or a :data:`ProducerFactory`.
    Use ``await relay.start()`` in a service's startup and ``await relay.stop()`` in its
    shutdown (it publishes what is pending, within ``grace``); or ``async with relay``.
    """

    def __init__(
        self,
        session_maker: async_sessionmaker[AsyncSession],
        producer: str | ProducerFactory,
        *,
        batch: int = 100,
        poll_interval: float = 0.5,
        linger: float = 0.0,
        min_backoff: float = 0.1,
        max_backoff: float = 5.0,
        stall_after: float = 10.0,
        retain_published: float = 600.0,
        purge_interval: float = 60.0,
        tracer_provider: TracerProvider | None = None,
        registry: CollectorRegistry | None = REGISTRY,
        reader: async_sessionmaker[AsyncSession] | None = None,
        turns: Turns | None = None,
    ) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self._session_maker = session_maker
        self._reader = reader or session_maker
        """Where the next batch is read: on SQLite the service's reader pool, so the poll
        never queues behind the one writer connection (under load it waited 60-270 ms
        there, twice a cycle with the mark); only marking rows needs the writer."""
        self._turns = turns
        """Set when relays of other processes share the outbox (:mod:`.outbox_turn`): a
        cycle then reads on the writer, in the transaction that takes the turn."""
        self._factory = kafka_producer_factory(producer) if isinstance(producer, str) else producer
        self._batch = batch
        self._unpublished = Prepared(
            select(*_ROW_COLUMNS)
            .where(_OUTBOX.c.published_at.is_(None))
            .order_by(_OUTBOX.c.id)
            .limit(batch)
        )
        self._poll_interval = poll_interval
        if linger < 0:
            raise ValueError("linger must not be negative")
        self._linger = linger
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._stall_after = stall_after
        self._retain = timedelta(seconds=retain_published)
        self._purge_interval = purge_interval
        self._follows = follows_parent_sampling(tracer_provider)
        self._tracer = trace.get_tracer(TRACER_NAME, tracer_provider=tracer_provider)
        self._metrics = _metrics(registry)
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._flush_on_stop = True
        self._deadline = 0.0
        self._producer: Producer | None = None
        self._abandoned = False
        self._cycles = 0
        self._idle_cycle = 0
        self._idle = asyncio.Condition()
        self._last_purge = 0.0
        self.last_error: BaseException | None = None
        """The last failure or stall of the relay (``None`` after a successful cycle)."""

    # -- life cycle ----------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def connected(self) -> bool:
        """A Kafka producer is started (made on the first pending event, kept after)."""
        return self._producer is not None

    async def start(self) -> None:
        """Start the background task (returns at once; Kafka may still be unreachable)."""
        if self.running:
            return
        self._loop = asyncio.get_running_loop()
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="outbox-relay")
        _RELAYS.add(self)

    async def stop(self, *, flush: bool = True, grace: float = 10.0) -> None:
        """Stop the task. With ``flush``, first publish what is pending; without, only let
        the sends in flight finish. Either way for at most ``grace`` seconds: what is left
        stays in the outbox for the next start."""
        _RELAYS.discard(self)
        task, self._task = self._task, None
        if task is None:
            return
        assert self._loop is not None
        self._flush_on_stop = flush
        self._deadline = self._loop.time() + grace
        self._stopping.set()
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), grace + 3 * _CLOSE_GRACE)
        except TimeoutError:
            log.warning("outbox relay did not stop within %.1fs; cancelling it", grace)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> OutboxRelay:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    def notify(self) -> None:
        """Wake the relay now (safe from any thread and from synchronous code)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake.set()
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake.set)

    async def flush(self) -> None:
        """Return once a relay cycle that started after this call found nothing pending.

        Bound it with ``asyncio.timeout``: while Kafka is unreachable it does not return.
        """
        if not self.running:
            raise RuntimeError("the outbox relay is not running")
        target = self._cycles + 1
        self._wake.set()
        async with self._idle:
            await self._idle.wait_for(lambda: self._idle_cycle >= target)

    # -- the loop ------------------------------------------------------------------------
    def _closing(self) -> bool:
        """Stopping, and either not flushing or past the deadline: start no new cycle."""
        assert self._loop is not None
        return self._stopping.is_set() and (
            not self._flush_on_stop or self._loop.time() >= self._deadline
        )

    async def _run(self) -> None:
        backoff = self._min_backoff
        try:
            while not self._closing():
                self._wake.clear()
                try:
                    remaining = await self._cycle()
                except _NotOurTurn:
                    # another relay's cycle: it sends what it read, and our rows after
                    await self._sleep(self._linger or _TURN_WAIT, wake_on_notify=False)
                    continue
                except Exception as exc:
                    self.last_error = exc
                    self._metrics.failures.inc()
                    if isinstance(exc, _PublishFailed):
                        if self._closing():
                            log.info("outbox relay: stopping with events unpublished (%s)", exc)
                        else:
                            log.warning("outbox relay: Kafka publish failed (%s); retrying", exc)
                        await self._close_producer()
                    else:
                        log.exception("outbox relay: cycle failed; retrying")
                    delay = random.uniform(backoff / 2, backoff)  # noqa: S311 - jitter
                    backoff = min(backoff * 2, self._max_backoff)
                    await self._sleep(delay, wake_on_notify=False)
                    continue
                self.last_error = None
                backoff = self._min_backoff
                await self._maybe_purge()
                if remaining:
                    continue
                if self._stopping.is_set():
                    break  # flushed
                await self._sleep(self._poll_interval, wake_on_notify=True)
                if self._linger and self._wake.is_set() and not self._stopping.is_set():
                    await asyncio.sleep(self._linger)  # let the commits of this moment join
        finally:
            await self._close_producer()

    async def _sleep(self, delay: float, *, wake_on_notify: bool) -> None:
        assert self._loop is not None
        if self._stopping.is_set():
            delay = min(delay, max(0.0, self._deadline - self._loop.time()))
            wake_on_notify = False
        waiter = self._wake if wake_on_notify else self._stopping
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter.wait(), delay)

    async def _producer_ready(self) -> Producer:
        if self._producer is None:
            producer = self._factory()
            try:
                await producer.start()
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    await producer.stop()
                if isinstance(exc, Exception):
                    raise _PublishFailed(exc) from exc
                raise
            self._producer = producer
        return self._producer

    async def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        abandoned, self._abandoned = self._abandoned, False
        if producer is None:
            return
        if abandoned:
            await self._abort(producer, None)
            return
        stopping = asyncio.ensure_future(producer.stop())
        done, _ = await asyncio.wait({stopping}, timeout=_CLOSE_GRACE)
        if not done:  # stop() waits for sends the broker cannot take
            await self._abort(producer, stopping)
        elif not stopping.cancelled() and (error := stopping.exception()) is not None:
            log.warning("outbox relay: closing the Kafka producer failed: %r", error)

    async def _abort(self, producer: Producer, stopping: asyncio.Future[None] | None) -> None:
        """Close a producer without delivering its pending sends.

        aiokafka has no such call: an idempotent producer retries a batch until the broker
        takes it, and ``stop()`` waits for that. So its sender task is cancelled, then its
        connections closed (or its ``stop()``, already waiting, lets go).
        """
        log.info("outbox relay: abandoning the undelivered sends of the Kafka producer")
        internals: Any = producer
        sender = getattr(getattr(internals, "_sender", None), "sender_task", None)
        if isinstance(sender, asyncio.Future) and not sender.done():
            sender.cancel()
            await asyncio.wait({sender}, timeout=_CLOSE_GRACE)
        try:
            if stopping is not None:
                await asyncio.wait_for(stopping, _CLOSE_GRACE)
            elif (client := getattr(internals, "client", None)) is not None:
                await asyncio.wait_for(client.close(), _CLOSE_GRACE)
                internals._closed = True  # closed by hand: its __del__ must not warn
            else:
                await asyncio.wait_for(producer.stop(), _CLOSE_GRACE)
        except Exception as exc:
            log.warning("outbox relay: the Kafka producer did not close cleanly: %r", exc)

    async def _cycle(self) -> int:
        """One batch: read, publish, mark. Returns how many rows are still pending."""
        self._cycles += 1
        cycle = self._cycles
        if self._turns is None:
            rows, pending = await in_transaction(self._reader, self._unpublished_rows)
        else:
            rows, pending = await self._take_turn_and_read(self._turns)
        failure: _PublishFailed | None = None
        published: list[Any] = []
        if rows:
            try:
                producer = await self._producer_ready()
                published = await self._publish(producer, rows)
            except _PublishFailed as exc:
                failure, published = exc, exc.acknowledged
            finally:
                if published or self._turns is not None:
                    await self._mark_published(published)  # and gives the turn back
        remaining = pending - len(published)
        self._metrics.pending.set(remaining)
        if failure is not None:
            # the acknowledged rows are marked; everything else waits for the next attempt
            raise failure
        if remaining == 0:
            self._idle_cycle = cycle
            async with self._idle:
                self._idle.notify_all()
        return remaining

    async def _take_turn_and_read(self, turns: Turns) -> tuple[list[Any], int]:
        if not turns.row_made:
            with contextlib.suppress(IntegrityError):  # made by another relay meanwhile
                await in_transaction(self._session_maker, turns.make_row)
            turns.row_made = True
        taken = await in_transaction(self._session_maker, self._turn_and_rows, turns)
        if taken is None:
            raise _NotOurTurn
        return taken

    def _turn_and_rows(self, session: Connection, turns: Turns) -> tuple[list[Any], int] | None:
        if not turns.take(session):
            return None
        rows, pending = self._unpublished_rows(session)
        if not rows:
            turns.give_back(session)  # an idle relay never holds the turn
        return rows, pending

    def _unpublished_rows(self, session: Connection) -> tuple[list[Any], int]:
        """The next batch of rows to publish, and how many are waiting in all."""
        rows = self._unpublished(session).all()
        pending = len(rows)
        if pending == self._batch:
            pending = int(_COUNT_UNPUBLISHED(session).scalar_one())
        return rows, pending

    async def _publish(self, producer: Producer, rows: Sequence[Any]) -> list[Any]:
        """Send ``rows`` as one record batch per partition; the rows acknowledged.

        A partition's batch holds its rows in outbox order, and Kafka appends a batch
        whole or not at all, so a key's events of one cycle arrive together and in
        order, in one produce request for the whole cycle. Rows that do not fit their
        partition's batch (``BATCH_BYTES``) wait for the next cycle, with every later
        row of that partition. Raises :class:`_PublishFailed` if a batch failed,
        carrying the rows of the batches acknowledged, so they can still be marked.
        """
        try:
            batches = await self._batches(producer, rows)
            deliveries: list[asyncio.Future[Any]] = []
            for (topic, partition), batch in batches.items():
                delivery = asyncio.ensure_future(
                    await producer.send_batch(batch.builder, topic, partition=partition)
                )
                delivery.add_done_callback(_retrieve)
                deliveries.append(delivery)
        except Exception as exc:  # no metadata, or a batch refused: nothing of this cycle
            raise _PublishFailed(exc) from exc  # is marked (the producer is re-created)
        # never cancel the producer's futures: a stop abandons the waits, not the sends
        waits = [asyncio.ensure_future(asyncio.shield(d)) for d in deliveries]
        await self._await_sends(waits)
        acknowledged: list[Any] = []
        failure: BaseException | None = None
        for batch, wait in zip(batches.values(), waits, strict=True):
            error = _Abandoned("stopped waiting") if wait.cancelled() else wait.exception()
            batch.finish(None if error is not None else wait.result(), error)
            if error is None:
                acknowledged += batch.rows
            else:
                failure = failure or error
        if failure is not None:
            raise _PublishFailed(failure, acknowledged)
        return acknowledged

    async def _batches(
        self, producer: Producer, rows: Sequence[Any]
    ) -> dict[tuple[str, int], _Batch]:
        """``rows`` in record batches by topic and partition, in outbox order; a row that
        overflows its partition's batch is left out with the partition's later rows."""
        partition_of = _Partitioner(producer)
        batches: dict[tuple[str, int], _Batch] = {}
        full: set[tuple[str, int]] = set()
        for row in rows:
            if self._closing():
                break
            where = (row.topic, await partition_of(row.topic, row.key))
            if where in full:
                continue
            batch = batches.get(where)
            if batch is None:
                batch = batches[where] = _Batch(producer.create_batch())
            span, headers = self._producer_span(row)
            record = batch.builder.append(
                key=row.key.encode(), value=row.payload, timestamp=None, headers=headers
            )
            if record is None:  # full: this row and the partition's later rows wait
                full.add(where)  # (its span is dropped unended: never exported)
                continue
            batch.rows.append(row)
            batch.spans.append(span)
        return batches

    async def _await_sends(self, sends: Sequence[asyncio.Future[Any]]) -> None:
        """Wait for a cycle's sends: report a stall after ``stall_after`` seconds, and
        abandon the ones still unacknowledged when the stop deadline passes."""
        assert self._loop is not None
        stall_at = self._loop.time() + self._stall_after
        pending: set[asyncio.Future[Any]] = set(sends)
        stalled = False
        while pending:
            if self._stopping.is_set() and self._loop.time() >= self._deadline:
                self._abandoned = True
                for send in pending:
                    send.cancel()
                await asyncio.wait(pending)
                return
            _, pending = await asyncio.wait(pending, timeout=_TICK)
            if pending and not stalled and self._loop.time() >= stall_at:
                stalled = True
                self.last_error = TimeoutError(
                    f"Kafka has not acknowledged {len(pending)} batches for "
                    f"{self._stall_after:.1f}s; the producer keeps retrying"
                )
                self._metrics.failures.inc()
                log.warning("outbox relay: %s", self.last_error)

    def _producer_span(self, row: Any) -> tuple[Span | None, list[tuple[str, bytes]]]:
        """The row's PRODUCER span (none under an unsampled parent: the staged context
        travels on as it is) and the Kafka headers that carry its context."""
        carrier: dict[str, str] = dict(row.headers or {})
        parent = extract(carrier)
        span: Span | None = None
        if not (self._follows and unsampled(parent)):
            span = self._tracer.start_span(
                f"{row.topic} publish",
                context=parent,
                kind=SpanKind.PRODUCER,
                attributes={
                    "messaging.system": "kafka",
                    "messaging.operation.type": "publish",
                    "messaging.operation.name": "publish",
                    "messaging.destination.name": row.topic,
                    "messaging.kafka.message.key": row.key,
                    "messaging.message.id": row.event_id,
                    "messaging.message.body.size": len(row.payload),
                    "event.type": row.event_type,
                    "event.version": row.event_version,
                },
            )
            propagate.inject(carrier, context=trace.set_span_in_context(span))
        headers = [(name, value.encode()) for name, value in carrier.items()]
        headers += [
            ("event-type", row.event_type.encode()),
            ("event-version", str(row.event_version).encode()),
            ("event-id", row.event_id.encode()),
        ]
        return span, headers

    async def _mark_published(self, rows: Sequence[Any]) -> None:
        """Mark ``rows`` published (and give the turn back, if the relay takes turns)."""
        now = datetime.now(UTC)
        ids = [row.id for row in rows]
        await in_transaction(self._session_maker, _mark, ids, now, self._turns)
        for row in rows:
            self._metrics.published.labels(row.topic).inc()
            created = row.created_at
            if created.tzinfo is None:
                created = created.replace(tzinfo=UTC)
            self._metrics.lag.observe(max(0.0, (now - created).total_seconds()))

    async def _maybe_purge(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        if now - self._last_purge < self._purge_interval:
            return
        self._last_purge = now
        cutoff = datetime.now(UTC) - self._retain
        try:
            async with self._session_maker() as session, session.begin():
                result = await session.execute(
                    delete(OutboxMessage)
                    .where(OutboxMessage.published_at.is_not(None))
                    .where(OutboxMessage.published_at < cutoff)
                    .execution_options(synchronize_session=False)
                )
            purged = getattr(result, "rowcount", 0) or 0
            if purged:
                log.debug("outbox relay: purged %d published rows", purged)
        except Exception:
            log.warning("outbox relay: purge failed", exc_info=True)
