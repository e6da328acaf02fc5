"""Outbox and inbox against a real SQLite file, with a fake producer instead of Kafka."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from advanced_alchemy.base import orm_registry
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from prometheus_client import CollectorRegistry
from sqlalchemy import Connection, func, select, text
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from harness.localstack import free_port
from system.chassis import inbox
from system.chassis.db import create_engine, create_reader, in_transaction
from system.chassis.inbox import Batched, EventConsumer, InboxEntry, Outcome
from system.chassis.outbox import OutboxMessage, OutboxRelay, Producer, stage, stage_in
from system.chassis.settings import ServiceSettings
from system.events import (
    Event,
    OrderItem,
    OrderPlacedV1,
    StockReservedV1,
    UserRegisteredV1,
    decode,
    encode,
    new_event,
)
from tests.conftest import consumer_record as record

Maker = async_sessionmaker[AsyncSession]


@pytest.fixture
def spans() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def placed(order_id: str, n: int = 1) -> Event[OrderPlacedV1]:
    item = OrderItem(product_id="p", quantity=n, unit_price_cents=100)
    return new_event(OrderPlacedV1(order_id=order_id, user_id="u", items=[item], total_cents=100))


async def outbox_rows(maker: Maker) -> list[OutboxMessage]:
    async with maker() as session:
        return list((await session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))).all())


# -- staging -----------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_a_rolled_back_savepoint_drops_its_own_staged_rows_only(
    maker: Maker,
) -> None:
    async with maker() as session, session.begin():
        await stage(session, placed("o-1"))
        savepoint = await session.begin_nested()
        await stage(session, placed("o-2"))
        await savepoint.rollback()
        async with session.begin_nested():
            await stage(session, placed("o-3"))
        await stage(session, placed("o-4"))
    assert sorted(r.key for r in await outbox_rows(maker)) == ["o-1", "o-3", "o-4"]


@pytest.mark.asyncio
async def test_staging_in_a_rolled_back_transaction_leaves_no_row(maker: Maker) -> None:
    async with maker() as session, session.begin():
        await stage(session, placed("o-1"))
        assert await session.scalar(select(func.count()).select_from(OutboxMessage)) == 1
        await session.rollback()

    async def fails_after_staging() -> None:
        async with maker() as session, session.begin():
            await stage(session, placed("o-2"))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await fails_after_staging()
    assert await outbox_rows(maker) == []


@pytest.mark.asyncio
async def test_staging_and_commit_keeps_the_event_and_the_trace_context(
    maker: Maker, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, _ = spans
    event = placed("o-1")
    with provider.get_tracer("test").start_as_current_span("place order") as span:
        async with maker() as session, session.begin():
            await stage(session, event)
    [row] = await outbox_rows(maker)
    context = span.get_span_context()
    assert row.headers["traceparent"] == (
        f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
    )
    assert (row.topic, row.key, row.event_type, row.event_version) == (
        "orders.events",
        "o-1",
        "order.placed",
        1,
    )
    assert row.event_id == str(event.id)
    assert row.payload == encode(event)
    assert row.published_at is None
    assert row.created_at.tzinfo is not None


@pytest.mark.asyncio
async def test_staging_outside_a_span_has_no_trace_headers(maker: Maker) -> None:
    async with maker() as session, session.begin():
        await stage(session, placed("o-1"))
    [row] = await outbox_rows(maker)
    assert row.headers == {}


# -- the relay, with a fake Kafka ---------------------------------------------------------
Message = tuple[str, bytes, bytes, dict[str, bytes]]


class FakeBatch:
    """A record batch that holds ``capacity`` records."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.records: list[tuple[bytes, bytes, dict[str, bytes]]] = []

    def append(
        self,
        *,
        timestamp: int | None,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> Any | None:
        if len(self.records) >= self.capacity:
            return None
        assert key is not None
        assert value is not None
        self.records.append((key, value, dict(headers)))
        return SimpleNamespace(offset=len(self.records) - 1)


class FakeKafka:
    """Records what was sent, batch by batch; ``fail`` decides, per message, whether
    the batch holding it fails."""

    def __init__(self, fail: Callable[[str, bytes], bool] = lambda _t, _k: False) -> None:
        self.fail = fail
        self.sent: list[Message] = []
        self.batches: list[list[Message]] = []
        self.batch_capacity = 1000
        self.started = 0
        self.stopped = 0
        self.refuse_start = False
        self.refuse_metadata = 0
        """How many more ``partitions_for`` calls fail (the broker's metadata unreachable)."""
        self.holding = False
        self.held: list[tuple[asyncio.Future[Any], list[Message]]] = []

    def deliver(self, future: asyncio.Future[Any], batch: list[Message]) -> None:
        future.set_result(SimpleNamespace(partition=0, offset=len(self.sent)))
        self.sent += batch
        self.batches.append(batch)

    def release(self) -> None:
        """The broker is back: held batches are delivered, in order."""
        self.holding = False
        for future, batch in self.held:
            if not future.done():
                self.deliver(future, batch)
        self.held.clear()

    def factory(self) -> Producer:
        kafka = self

        class FakeProducer:
            async def start(self) -> None:
                kafka.started += 1
                if kafka.refuse_start:
                    raise ConnectionRefusedError("kafka is down")

            async def stop(self) -> None:
                kafka.stopped += 1

            async def partitions_for(self, topic: str) -> set[int]:
                if kafka.refuse_metadata:
                    kafka.refuse_metadata -= 1
                    raise TimeoutError("no metadata for the topic")
                return {0, 1, 2}

            def create_batch(self) -> FakeBatch:
                return FakeBatch(kafka.batch_capacity)

            async def send_batch(
                self, batch: FakeBatch, topic: str, *, partition: int
            ) -> asyncio.Future[Any]:
                future = asyncio.get_running_loop().create_future()
                await asyncio.sleep(0)
                messages = [(topic, key, value, headers) for key, value, headers in batch.records]
                if any(kafka.fail(topic, key) for _, key, _, _ in messages):
                    future.set_exception(TimeoutError("request timed out"))
                elif kafka.holding:  # the broker is unreachable: the producer keeps retrying
                    kafka.held.append((future, messages))
                else:
                    kafka.deliver(future, messages)
                return future

        return FakeProducer()

    def event_ids(self, key: bytes | None = None) -> list[str]:
        return [h["event-id"].decode() for _t, k, _v, h in self.sent if key in (None, k)]


def relay_for(maker: Maker, kafka: FakeKafka, **options: Any) -> OutboxRelay:
    options = {"poll_interval": 30.0, "min_backoff": 0.01, "max_backoff": 0.05, **options}
    return OutboxRelay(maker, kafka.factory, registry=CollectorRegistry(), **options)


async def stage_all(maker: Maker, events: Sequence[Event[Any]]) -> None:
    async with maker() as session, session.begin():
        for event in events:
            await stage(session, event)


async def drain(maker: Maker, kafka: FakeKafka, **options: Any) -> None:
    """A relay started, flushed until nothing is pending, and stopped."""
    relay = relay_for(maker, kafka, **options)
    await relay.start()
    try:
        await asyncio.wait_for(relay.flush(), 5.0)
    finally:
        await relay.stop()


def last_error(relay: OutboxRelay) -> BaseException | None:
    """The relay's last error, read afresh (it changes behind the awaits)."""
    return relay.last_error


async def eventually(check: Callable[[], Any], what: str, timeout: float = 5.0) -> Any:
    """Poll ``check`` until it returns something truthy, or fail naming ``what``."""
    deadline = asyncio.get_running_loop().time() + timeout
    for _ in itertools.count():
        if result := check():
            return result
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.01)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


@pytest.mark.asyncio
async def test_a_commit_wakes_the_relay_which_publishes_with_headers_and_metrics(
    maker: Maker, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    kafka = FakeKafka()
    registry = CollectorRegistry()
    relay = OutboxRelay(
        maker, kafka.factory, poll_interval=30.0, registry=registry, tracer_provider=provider
    )
    await relay.start()
    try:
        await asyncio.wait_for(relay.flush(), 2.0)  # the first, empty, cycle
        event = placed("o-1")
        with provider.get_tracer("test").start_as_current_span("place order") as parent:
            async with maker() as session, session.begin():
                await stage(session, event)
        # poll_interval is 30 s: only the after-commit wake-up can publish this quickly
        await eventually(lambda: kafka.sent, "the event published", timeout=2.0)
        await asyncio.wait_for(relay.flush(), 2.0)
    finally:
        await relay.stop()
    [(topic, key, value, headers)] = kafka.sent
    assert (topic, key, value) == ("orders.events", b"o-1", encode(event))
    assert headers["event-type"] == b"order.placed"
    assert headers["event-version"] == b"1"
    assert headers["event-id"] == str(event.id).encode()
    [publish] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.PRODUCER]
    assert publish.name == "orders.events publish"
    assert publish.parent is not None
    assert publish.parent.span_id == parent.get_span_context().span_id
    assert publish.context.trace_id == parent.get_span_context().trace_id
    assert headers["traceparent"].decode().split("-")[2] == f"{publish.context.span_id:016x}"
    assert publish.attributes is not None
    assert publish.attributes["messaging.system"] == "kafka"
    assert publish.attributes["messaging.destination.name"] == "orders.events"
    [row] = await outbox_rows(maker)
    assert row.published_at is not None
    assert registry.get_sample_value("outbox_published_total", {"topic": "orders.events"}) == 1
    assert registry.get_sample_value("outbox_pending") == 0
    assert registry.get_sample_value("outbox_lag_seconds_count") == 1
    assert kafka.stopped == kafka.started == 1


@pytest.mark.asyncio
async def test_a_woken_relay_lingers_so_that_the_commits_of_that_moment_go_out_together(
    maker: Maker,
) -> None:
    loop = asyncio.get_running_loop()
    kafka = FakeKafka()
    sent_at: list[float] = []
    deliver = kafka.deliver

    def timed(future: asyncio.Future[Any], batch: list[Message]) -> None:
        sent_at.extend(loop.time() for _ in batch)
        deliver(future, batch)

    kafka.deliver = timed  # type: ignore[method-assign]
    relay = relay_for(maker, kafka, linger=0.3)
    await relay.start()
    try:
        await asyncio.wait_for(relay.flush(), 2.0)  # the first, empty, cycle
        committed = loop.time()
        async with maker() as session, session.begin():
            await stage(session, placed("o-1"))
        await asyncio.sleep(0.1)
        async with maker() as session, session.begin():
            await stage(session, placed("o-2"))
        await eventually(lambda: len(kafka.sent) == 2, "both events published", timeout=2.0)
    finally:
        await relay.stop()
    assert sent_at[0] - committed >= 0.25  # the relay waited for more commits
    assert sent_at[1] - sent_at[0] < 0.05  # and sent both in one cycle


@pytest.mark.asyncio
async def test_a_core_transaction_wakes_the_relay_when_it_commits_and_not_when_it_rolls_back(
    maker: Maker,
) -> None:
    """``stage_in`` on the connection of ``in_transaction``: the wake-up comes from the
    chassis' after-commit callbacks, not from the ORM session's event."""
    kafka = FakeKafka()
    relay = OutboxRelay(maker, kafka.factory, poll_interval=30.0, registry=CollectorRegistry())
    woken: list[str] = []
    notify = relay.notify
    relay.notify = lambda: (woken.append("notify"), notify())[1]  # type: ignore[method-assign]
    await relay.start()
    try:
        await asyncio.wait_for(relay.flush(), 2.0)  # the first, empty, cycle
        woken.clear()

        def staged_then_refused(connection: Connection) -> None:
            stage_in(connection, placed("o-refused"))
            raise ValueError("refused")

        with pytest.raises(ValueError, match="refused"):
            await in_transaction(maker, staged_then_refused)
        assert woken == []
        await in_transaction(maker, stage_in, placed("o-1"))
        assert woken == ["notify"]
        # poll_interval is 30 s: only the after-commit wake-up can publish this quickly
        await eventually(lambda: kafka.sent, "the event published", timeout=2.0)
        await asyncio.wait_for(relay.flush(), 2.0)
    finally:
        await relay.stop()
    assert [key for _, key, _, _ in kafka.sent] == [b"o-1"]
    assert [row.key for row in await outbox_rows(maker)] == ["o-1"]


@pytest.mark.asyncio
async def test_the_relay_reads_its_batch_through_the_reader_while_the_writer_is_busy(
    tmp_path: Path,
) -> None:
    """On SQLite a service has one writer connection, which every request and saga step
    queue for: the relay's poll goes through the reader pool, only the mark needs it."""
    settings = ServiceSettings(name="unit", data_dir=tmp_path)
    engine = create_engine(settings)
    reader = create_reader(settings, engine)
    async with engine.begin() as conn:
        await conn.run_sync(orm_registry.metadata.create_all)
    writer = async_sessionmaker(engine, expire_on_commit=False)
    kafka = FakeKafka()
    relay = relay_for(writer, kafka, reader=async_sessionmaker(reader, expire_on_commit=False))
    try:
        async with writer() as session, session.begin():
            await stage(session, placed("o-1"))
        async with writer() as busy:
            await busy.execute(text("SELECT 1"))  # holds the writer's only connection
            await relay.start()
            await eventually(lambda: kafka.sent, "a send while the writer is held")
            [row] = await outbox_rows(async_sessionmaker(reader))
            assert row.published_at is None  # marking waits for the writer
        await asyncio.wait_for(relay.flush(), 5.0)
        [row] = await outbox_rows(writer)
        assert row.published_at is not None
    finally:
        await relay.stop()
        await reader.dispose()
        await engine.dispose()


@pytest.mark.asyncio
async def test_a_cycle_sends_one_batch_per_partition_with_each_key_in_order(
    maker: Maker,
) -> None:
    kafka = FakeKafka()
    staged = [placed(f"o-{i % 4}", n=i + 1) for i in range(12)]
    await stage_all(maker, staged)
    await drain(maker, kafka)
    assert sorted(kafka.event_ids()) == sorted(str(e.id) for e in staged)
    assert len(kafka.batches) == 2, "one batch per partition: o-0, o-1 and o-2 share one"
    for batch in kafka.batches:
        ids = [h["event-id"].decode() for _t, _k, _v, h in batch]
        assert ids == [str(e.id) for e in staged if str(e.id) in ids], "outbox order"
    for key in {e.key for e in staged}:
        [holding] = [b for b in kafka.batches if any(k == key.encode() for _t, k, _v, _h in b)]
        assert sum(k == key.encode() for _t, k, _v, _h in holding) == 3, "a key in one batch"


@pytest.mark.asyncio
async def test_rows_that_overflow_their_partitions_batch_wait_for_the_next_cycle(
    maker: Maker,
) -> None:
    kafka = FakeKafka()
    kafka.batch_capacity = 2
    staged = [placed("o-1", n=i + 1) for i in range(5)]
    await stage_all(maker, staged)
    await drain(maker, kafka)
    assert [len(b) for b in kafka.batches] == [2, 2, 1]
    assert kafka.event_ids() == [str(e.id) for e in staged], "in order, each once"
    assert all(row.published_at is not None for row in await outbox_rows(maker))


@pytest.mark.asyncio
async def test_a_failed_batch_publishes_none_of_its_keys_events_and_the_others_go_on(
    maker: Maker,
) -> None:
    refused = {"times": 1}

    def fail(_topic: str, key: bytes) -> bool:
        if key == b"a" and refused["times"]:
            refused["times"] -= 1
            return True
        return False

    kafka = FakeKafka(fail)
    keys = ["a", "a", "b", "a"]  # "a" and "b" map to different partitions of three
    staged = [placed(key, n=i + 1) for i, key in enumerate(keys)]
    await stage_all(maker, staged)
    await drain(maker, kafka)
    ids = [str(e.id) for e in staged]
    assert [k for _t, k, _v, _h in kafka.batches[0]] == [b"b"], "b went out at once"
    assert kafka.event_ids(b"b") == [ids[2]]
    assert kafka.event_ids(b"a") == [ids[0], ids[1], ids[3]], "a: all three, later, in order"
    assert len([b for b in kafka.batches if any(k == b"a" for _t, k, _v, _h in b)]) == 1


@pytest.mark.asyncio
async def test_a_producer_without_metadata_is_re_created_and_nothing_is_lost(
    maker: Maker,
) -> None:
    kafka = FakeKafka()
    kafka.refuse_metadata = 2
    staged = [placed(f"o-{i}", n=i + 1) for i in range(3)]
    await stage_all(maker, staged)
    await drain(maker, kafka)
    assert kafka.started == 3, "a new producer after each failed cycle"
    assert sorted(kafka.event_ids()) == sorted(str(e.id) for e in staged)
    assert all(row.published_at is not None for row in await outbox_rows(maker))


@pytest.mark.asyncio
async def test_failed_sends_keep_rows_and_per_key_order(maker: Maker) -> None:
    failures = {"remaining": 3}

    def fail(_topic: str, key: bytes) -> bool:
        if key == b"a" and failures["remaining"] > 0:
            failures["remaining"] -= 1
            return True
        return False

    kafka = FakeKafka(fail)
    staged = [placed("a" if i % 2 == 0 else "b", n=i + 1) for i in range(6)]
    await stage_all(maker, staged)
    await drain(maker, kafka, batch=4)
    for key in (b"a", b"b"):
        expected = [str(e.id) for e in staged if e.key.encode() == key]
        assert kafka.event_ids(key) == expected, f"key {key!r} kept its order, lost nothing"
    assert kafka.started > 1, "the producer is re-created after a failure"
    assert all(row.published_at is not None for row in await outbox_rows(maker))


@pytest.mark.asyncio
async def test_kafka_down_keeps_rows_until_it_is_back(maker: Maker) -> None:
    kafka = FakeKafka()
    kafka.refuse_start = True
    relay = relay_for(maker, kafka, poll_interval=0.05)
    await relay.start()
    try:
        async with maker() as session, session.begin():
            for i in range(3):
                await stage(session, placed("o-1", n=i + 1))
        await eventually(lambda: kafka.started >= 3, "several connection attempts")
        assert last_error(relay) is not None
        assert [r.published_at for r in await outbox_rows(maker)] == [None] * 3
        kafka.refuse_start = False
        await asyncio.wait_for(relay.flush(), 5.0)
        assert last_error(relay) is None
    finally:
        await relay.stop()
    rows = await outbox_rows(maker)
    assert kafka.event_ids() == [r.event_id for r in rows]


@pytest.mark.asyncio
async def test_a_stalled_send_is_reported_and_completes_when_kafka_is_back(maker: Maker) -> None:
    kafka = FakeKafka()
    registry = CollectorRegistry()
    relay = OutboxRelay(
        maker, kafka.factory, poll_interval=30.0, stall_after=0.1, registry=registry
    )
    await relay.start()
    try:
        await asyncio.wait_for(relay.flush(), 2.0)
        kafka.holding = True
        async with maker() as session, session.begin():
            await stage(session, placed("o-1", n=1))
            await stage(session, placed("o-1", n=2))
        await eventually(lambda: relay.last_error, "the stall reported")
        assert isinstance(last_error(relay), TimeoutError)
        assert registry.get_sample_value("outbox_publish_failures_total") == 1
        [(_, batch)] = kafka.held
        assert len(batch) == 2, "the key's two events in one batch"
        kafka.release()
        await asyncio.wait_for(relay.flush(), 2.0)
        assert last_error(relay) is None
    finally:
        await relay.stop()
    assert kafka.event_ids() == [r.event_id for r in await outbox_rows(maker)]
    assert kafka.started == 1, "a stalled producer is waited for, not replaced"


@pytest.mark.asyncio
async def test_stop_gives_up_on_a_stuck_send_after_its_grace(maker: Maker) -> None:
    kafka = FakeKafka()
    relay = relay_for(maker, kafka)
    await relay.start()
    await asyncio.wait_for(relay.flush(), 2.0)
    kafka.holding = True
    async with maker() as session, session.begin():
        await stage(session, placed("o-1"))
    await eventually(lambda: kafka.held, "a send in flight")
    began = asyncio.get_running_loop().time()
    await relay.stop(grace=0.2)
    assert asyncio.get_running_loop().time() - began < 2.0
    assert not relay.running
    assert kafka.stopped == kafka.started == 1
    [row] = await outbox_rows(maker)
    assert row.published_at is None, "kept for the next start"


@pytest.mark.asyncio
async def test_stop_flushes_pending_events(maker: Maker) -> None:
    kafka = FakeKafka()
    relay = relay_for(maker, kafka)
    await relay.start()
    await asyncio.wait_for(relay.flush(), 2.0)
    async with maker() as session, session.begin():
        await stage(session, placed("o-1"))
    await relay.stop(flush=True, grace=5.0)
    assert len(kafka.sent) == 1
    assert not relay.running


@pytest.mark.asyncio
async def test_published_rows_are_purged_later(maker: Maker) -> None:
    kafka = FakeKafka()
    async with maker() as session, session.begin():
        await stage(session, placed("o-1"))
    relay = relay_for(maker, kafka, retain_published=0.0, purge_interval=0.0, poll_interval=0.01)
    await relay.start()
    try:
        await asyncio.wait_for(relay.flush(), 5.0)
        await relay.flush()  # one more cycle runs the purge after the publication
        await asyncio.sleep(0.05)
    finally:
        await relay.stop()
    assert len(kafka.sent) == 1
    assert await outbox_rows(maker) == []


# -- the inbox ---------------------------------------------------------------------------


async def effects(maker: Maker) -> list[tuple[str, str]]:
    async with maker() as session:
        result = await session.execute(text("SELECT event_id, note FROM effect ORDER BY rowid"))
        return [(r[0], r[1]) for r in result]


async def record_effect(session: AsyncSession, event: Event[Any]) -> None:
    await session.execute(
        text("INSERT INTO effect (event_id, note) VALUES (:id, :note)"),
        {"id": str(event.id), "note": event.type},
    )


def consumer_for(maker: Maker, handlers: dict[str, Any], **options: Any) -> EventConsumer:
    options = {"retry_backoff": 0.01, "registry": CollectorRegistry(), **options}
    return EventConsumer(maker, "127.0.0.1:1", "unit", ["orders.events"], handlers, **options)


@pytest.mark.asyncio
async def test_the_same_event_twice_has_one_effect(maker: Maker) -> None:
    registry = CollectorRegistry()
    consumer = consumer_for(maker, {"order.placed": record_effect}, registry=registry)
    event = placed("o-1")
    assert await consumer.process(record(event, offset=0)) is Outcome.PROCESSED
    assert await consumer.process(record(event, offset=1)) is Outcome.DUPLICATE
    assert await effects(maker) == [(str(event.id), "order.placed")]
    labels = {"consumer": "unit", "event_type": "order.placed"}
    assert registry.get_sample_value("inbox_processed_total", labels) == 1
    assert registry.get_sample_value("inbox_duplicates_total", labels) == 1
    async with maker() as session:
        [entry] = (await session.scalars(select(InboxEntry))).all()
    assert (entry.consumer, entry.event_id, entry.event_type) == ("unit", event.id, "order.placed")
    # another consumer (another service) applies it once too
    other = consumer_for(maker, {"order.placed": record_effect}, name="analytics")
    assert await other.process(record(event)) is Outcome.PROCESSED
    assert len(await effects(maker)) == 2


@pytest.mark.asyncio
async def test_bad_unknown_and_unhandled_messages_are_skipped(maker: Maker) -> None:
    registry = CollectorRegistry()
    consumer = consumer_for(maker, {"order.placed": record_effect}, registry=registry)
    unknown = encode(placed("o-1")).replace(b'"order.placed"', b'"order.shipped"')
    assert await consumer.process(record(b"\x00garbage")) is Outcome.REJECTED
    assert await consumer.process(record(unknown)) is Outcome.REJECTED
    user = new_event(UserRegisteredV1(user_id="u", email="e@x", role="admin"))
    assert await consumer.process(record(user)) is Outcome.UNHANDLED
    rejected = registry.get_sample_value(
        "inbox_rejected_total", {"consumer": "unit", "topic": "orders.events"}
    )
    assert rejected == 2
    assert await effects(maker) == []
    async with maker() as session:
        assert await session.scalar(select(func.count()).select_from(InboxEntry)) == 0


@pytest.mark.asyncio
async def test_a_failing_handler_is_rolled_back_and_retried(maker: Maker) -> None:
    calls: list[int] = []

    async def flaky(session: AsyncSession, event: Event[Any]) -> None:
        calls.append(1)
        await record_effect(session, event)  # rolled back when the handler raises
        if len(calls) < 3:
            raise RuntimeError("transient")

    consumer = consumer_for(maker, {"order.placed": flaky}, max_attempts=5)
    event = placed("o-1")
    assert await consumer.process(record(event)) is Outcome.PROCESSED
    assert len(calls) == 3
    assert await effects(maker) == [(str(event.id), "order.placed")]


@pytest.mark.asyncio
async def test_a_handler_failing_every_time_is_counted_and_skipped(maker: Maker) -> None:
    registry = CollectorRegistry()

    async def broken(session: AsyncSession, event: Event[Any]) -> None:
        await record_effect(session, event)
        raise ValueError("bug")

    consumer = consumer_for(maker, {"order.placed": broken}, max_attempts=3, registry=registry)
    assert await consumer.process(record(placed("o-1"))) is Outcome.FAILED
    assert await effects(maker) == []
    async with maker() as session:
        assert await session.scalar(select(func.count()).select_from(InboxEntry)) == 0
    labels = {"consumer": "unit", "event_type": "order.placed"}
    assert registry.get_sample_value("inbox_failed_total", labels) == 1


@pytest.mark.asyncio
async def test_the_consumer_span_continues_the_producer_trace(
    maker: Maker, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    staged: list[Event[Any]] = []

    async def reserve(session: AsyncSession, event: Event[Any]) -> None:
        follow_up = new_event(StockReservedV1(order_id=event.key, items=[]))
        staged.append(follow_up)
        await stage(session, follow_up)  # captured inside the consumer span

    headers: dict[str, str] = {}
    with provider.get_tracer("test").start_as_current_span("publish") as producer:
        propagate.inject(headers)
    consumer = consumer_for(maker, {"order.placed": reserve}, tracer_provider=provider)
    kafka_headers = [(k, v.encode()) for k, v in headers.items()] + [("event-type", b"x")]
    assert await consumer.process(record(placed("o-1"), headers=kafka_headers)) is (
        Outcome.PROCESSED
    )
    [process] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    assert process.name == "orders.events process"
    assert process.parent is not None
    assert process.parent.span_id == producer.get_span_context().span_id
    assert process.context.trace_id == producer.get_span_context().trace_id
    assert _attr(process, "inbox.outcome") == "processed"
    assert _attr(process, "messaging.consumer.group.name") == "unit"
    [row] = await outbox_rows(maker)
    assert row.event_id == str(staged[0].id)
    assert row.headers["traceparent"].split("-")[1:3] == [
        f"{process.context.trace_id:032x}",
        f"{process.context.span_id:016x}",
    ]
    assert trace.get_current_span() is trace.INVALID_SPAN


@pytest.mark.asyncio
async def test_an_unsampled_trace_is_carried_through_relay_and_consumer_without_spans(
    maker: Maker, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """The gateway chose not to trace: the relay and the consumer build no span (the
    sampler would drop them), and the original unsampled context travels on unchanged,
    into the events the handler stages."""
    provider, exporter = spans
    caller = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(0))
    traceparent = f"00-{0xABC:032x}-{0xDEF:016x}-00"
    with trace.use_span(NonRecordingSpan(caller)):
        async with maker() as session, session.begin():
            await stage(session, placed("o-1"))
    kafka = FakeKafka()
    relay = relay_for(maker, kafka, tracer_provider=provider)
    await relay.start()
    try:
        await asyncio.wait_for(relay.flush(), 2.0)
    finally:
        await relay.stop()
    [(_, _, value, headers)] = kafka.sent
    assert headers["traceparent"] == traceparent.encode()
    seen: list[SpanContext] = []

    async def reserve(session: AsyncSession, event: Event[Any]) -> None:
        seen.append(trace.get_current_span().get_span_context())
        await stage(session, new_event(StockReservedV1(order_id=event.key, items=[])))

    consumer = consumer_for(maker, {"order.placed": reserve}, tracer_provider=provider)
    published = record(decode(value), headers=list(headers.items()))
    assert await consumer.process(published) is Outcome.PROCESSED
    assert exporter.get_finished_spans() == ()
    assert [(c.trace_id, c.span_id, c.trace_flags.sampled) for c in seen] == [(0xABC, 0xDEF, False)]
    rows = await outbox_rows(maker)
    assert [row.headers["traceparent"] for row in rows] == [traceparent, traceparent]


def _attr(span: ReadableSpan, name: str) -> Any:
    assert span.attributes is not None
    return span.attributes.get(name)


@pytest.mark.asyncio
async def test_a_consumer_without_kafka_keeps_trying_and_stops_cleanly(maker: Maker) -> None:
    consumer = EventConsumer(
        maker,
        f"127.0.0.1:{free_port()}",
        "unit",
        ["orders.events"],
        {"order.placed": record_effect},
        retry_backoff=0.05,
        registry=CollectorRegistry(),
    )
    await consumer.start()
    await asyncio.sleep(0.3)
    assert consumer.running
    began = asyncio.get_running_loop().time()
    await consumer.stop(grace=5.0)
    assert asyncio.get_running_loop().time() - began < 2.0
    assert not consumer.running


@pytest.mark.asyncio
async def test_a_batch_is_applied_in_one_transaction_with_the_same_outcomes(maker: Maker) -> None:
    registry = CollectorRegistry()
    consumer = consumer_for(maker, {"order.placed": record_effect}, registry=registry)
    first, second, earlier = placed("o-1"), placed("o-2"), placed("o-0")
    assert await consumer.process(record(earlier)) is Outcome.PROCESSED
    user = new_event(UserRegisteredV1(user_id="u", email="e@x", role="admin"))
    batch = [
        record(first, offset=1),
        record(first, offset=2),  # redelivered within the batch
        record(earlier, offset=3),  # processed before
        record(b"\x00garbage", offset=4),
        record(user, offset=5),
        record(second, offset=6),
    ]
    commits: list[int] = []
    engine = maker.kw["bind"].sync_engine
    sa_event.listen(engine, "commit", lambda _conn: commits.append(1))
    assert await consumer.process_batch(batch) == [
        Outcome.PROCESSED,
        Outcome.DUPLICATE,
        Outcome.DUPLICATE,
        Outcome.REJECTED,
        Outcome.UNHANDLED,
        Outcome.PROCESSED,
    ]
    assert len(commits) == 1
    assert await effects(maker) == [(str(e.id), "order.placed") for e in (earlier, first, second)]
    labels = {"consumer": "unit", "event_type": "order.placed"}
    assert registry.get_sample_value("inbox_processed_total", labels) == 3
    assert registry.get_sample_value("inbox_duplicates_total", labels) == 2
    async with maker() as session:
        assert await session.scalar(select(func.count()).select_from(InboxEntry)) == 3


@pytest.mark.asyncio
async def test_a_batch_longer_than_one_inbox_lookup_finds_every_duplicate(maker: Maker) -> None:
    """The inbox rows of a batch are looked up a fixed number of ids at a time: events
    processed before are found in every chunk, the last one padded, and still one
    transaction applies the batch."""
    consumer = consumer_for(maker, {"order.placed": record_effect})
    events = [placed(f"o-{n}") for n in range(2 * inbox._SEEN_IDS + 5)]
    before = [*events[:: inbox._SEEN_IDS // 2], events[-1]]  # in every chunk, and the last
    for event in before:
        assert await consumer.process(record(event)) is Outcome.PROCESSED
    commits: list[int] = []
    sa_event.listen(maker.kw["bind"].sync_engine, "commit", lambda _conn: commits.append(1))
    batch = [record(event, offset=n) for n, event in enumerate(events)]
    outcomes = await consumer.process_batch([*batch, record(events[3], offset=len(batch))])
    assert outcomes == [
        Outcome.DUPLICATE if event in before else Outcome.PROCESSED for event in events
    ] + [Outcome.DUPLICATE]
    assert len(commits) == 1
    assert sorted(await effects(maker)) == sorted((str(e.id), "order.placed") for e in events)


@pytest.mark.asyncio
async def test_a_failing_batch_leaves_nothing_and_is_processed_one_by_one(
    maker: Maker, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    failures: list[str] = []

    async def flaky(session: AsyncSession, event: Event[Any]) -> None:
        await record_effect(session, event)
        if event.key == "o-2" and not failures:
            failures.append(event.key)
            raise RuntimeError("transient")

    registry = CollectorRegistry()
    consumer = consumer_for(
        maker, {"order.placed": flaky}, tracer_provider=provider, registry=registry
    )
    events = [placed(f"o-{n}") for n in (1, 2, 3)]
    outcomes = await consumer.process_batch([record(e, offset=i) for i, e in enumerate(events)])
    assert outcomes == [Outcome.PROCESSED] * 3
    assert failures == ["o-2"]
    assert registry.get_sample_value("inbox_batch_retries_total", {"consumer": "unit"}) == 1
    assert await effects(maker) == [(str(e.id), "order.placed") for e in events]
    # the rolled-back attempt's spans were never ended: one span per event, no more
    finished = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    assert sorted(_attr(s, "messaging.kafka.offset") for s in finished) == [0, 1, 2]
    assert {_attr(s, "inbox.outcome") for s in finished} == {"processed"}


@pytest.mark.asyncio
async def test_a_batched_handler_gets_its_consecutive_events_in_one_call_in_fetch_order(
    maker: Maker,
) -> None:
    calls: list[list[str]] = []

    async def record_all(session: AsyncSession, events: Sequence[Event[Any]]) -> None:
        calls.append([e.key for e in events])
        for event in events:
            await record_effect(session, event)

    batched = Batched(record_all)
    consumer = consumer_for(
        maker,
        {"order.placed": batched, "order.confirmed": batched, "user.registered": record_effect},
    )
    one, two, three, four = (placed(f"o-{n}") for n in range(4))
    user = new_event(UserRegisteredV1(user_id="u", email="e@x", role="admin"))
    batch = [record(e, offset=i) for i, e in enumerate([one, two, two, user, three, four])]
    assert await consumer.process_batch(batch) == [
        Outcome.PROCESSED,
        Outcome.PROCESSED,
        Outcome.DUPLICATE,
        Outcome.PROCESSED,
        Outcome.PROCESSED,
        Outcome.PROCESSED,
    ]
    # the per-event handler keeps its place between two calls of the batched one
    assert calls == [["o-0", "o-1"], ["o-2", "o-3"]]
    assert [note for _, note in await effects(maker)] == ["order.placed"] * 2 + [
        "user.registered"
    ] + ["order.placed"] * 2
    # one by one (a redelivery, or a failed batch redone), it gets a single event
    five = placed("o-5")
    assert await consumer.process(record(five)) is Outcome.PROCESSED
    assert calls[-1] == ["o-5"]


@pytest.mark.asyncio
async def test_each_event_of_a_batch_continues_its_own_producer_trace(
    maker: Maker, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans

    async def reserve(session: AsyncSession, event: Event[Any]) -> None:
        await stage(session, new_event(StockReservedV1(order_id=event.key, items=[])))

    producers, batch = [], []
    for n in range(3):
        headers: dict[str, str] = {}
        with provider.get_tracer("test").start_as_current_span(f"publish {n}") as producer:
            propagate.inject(headers)
        producers.append(producer.get_span_context())
        event = placed(f"o-{n}")
        batch.append(record(event, offset=n, headers=[(k, v.encode()) for k, v in headers.items()]))
    consumer = consumer_for(maker, {"order.placed": reserve}, tracer_provider=provider)
    assert await consumer.process_batch(batch) == [Outcome.PROCESSED] * 3
    consumed = sorted(
        (s for s in exporter.get_finished_spans() if s.kind is SpanKind.CONSUMER),
        key=lambda s: _attr(s, "messaging.kafka.offset"),
    )
    assert [s.context.trace_id for s in consumed] == [p.trace_id for p in producers]
    assert [s.parent.span_id for s in consumed if s.parent] == [p.span_id for p in producers]
    rows = await outbox_rows(maker)
    assert sorted(r.headers["traceparent"].split("-")[1] for r in rows) == sorted(
        f"{p.trace_id:032x}" for p in producers
    )
    assert trace.get_current_span() is trace.INVALID_SPAN


class OffsetLog:
    """The parts of aiokafka's consumer that ``_consume`` and ``_commit`` use: which
    partitions it holds, their high-water marks, and the offset commits it was sent."""

    def __init__(self, *held: str) -> None:
        self.held = set(held)
        self.commits: list[dict[str, int]] = []

    def assignment(self) -> set[str]:
        return self.held

    def highwater(self, _tp: str) -> int | None:
        return None

    async def commit(self, offsets: dict[str, int]) -> None:
        self.commits.append(dict(offsets))


@pytest.mark.asyncio
async def test_offsets_are_committed_at_most_once_per_interval_and_when_stopping(
    maker: Maker,
) -> None:
    consumer = consumer_for(maker, {"order.placed": record_effect}, commit_interval=0.3)
    kafka = OffsetLog("p0", "p1")
    events = iter(placed(f"o-{i}") for i in itertools.count())

    async def fetch(**offsets: int) -> None:
        await consumer._consume(
            kafka, {tp: [record(next(events), offset=o)] for tp, o in offsets.items()}
        )

    await fetch(p0=0)  # the first fetch: a commit at once
    await fetch(p0=1, p1=7)  # within the interval: due, not sent
    await fetch(p1=8)
    assert kafka.commits == [{"p0": 1}]
    kafka.held.discard("p0")  # a rebalance took p0 meanwhile: its offset is not sent
    await asyncio.sleep(0.3)
    await fetch(p1=9)
    assert kafka.commits == [{"p0": 1}, {"p1": 10}]
    await fetch(p1=10)  # due when the consumer stops (or idles)
    await consumer._commit(kafka)
    assert kafka.commits[-1] == {"p1": 11}
    assert len(await effects(maker)) == 6


@pytest.mark.asyncio
async def test_no_commit_interval_commits_every_fetch(maker: Maker) -> None:
    consumer = consumer_for(maker, {"order.placed": record_effect}, commit_interval=0)
    kafka = OffsetLog("p0")
    for offset in range(3):
        await consumer._consume(kafka, {"p0": [record(placed(f"o-{offset}"), offset=offset)]})
    assert kafka.commits == [{"p0": 1}, {"p0": 2}, {"p0": 3}]


@pytest.mark.asyncio
async def test_the_purge_finds_published_rows_by_an_index_that_staging_never_touches(
    maker: Maker,
) -> None:
    async with maker() as session:
        indexed = await session.scalar(
            text("SELECT sql FROM sqlite_master WHERE name = 'ix_outbox_published_at'")
        )
        plan = (
            await session.execute(
                text(
                    "EXPLAIN QUERY PLAN DELETE FROM outbox"
                    " WHERE published_at IS NOT NULL AND published_at < :cutoff"
                ),
                {"cutoff": "2026-01-01"},
            )
        ).all()
    assert str(indexed).endswith("WHERE published_at IS NOT NULL")
    assert any("ix_outbox_published_at" in str(row) for row in plan)
