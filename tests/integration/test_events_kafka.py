"""The outbox and the inbox against a real Kafka (through Toxiproxy, as services see it).

Two "services" in this process, each with its own SQLite database: one stages events and
relays them, the other consumes them through the inbox. Proven here: exactly-once effects
under redelivery, one trace from the staging code to the consumer, and no loss nor
reordering while Kafka is unreachable (never reached, or cut off mid-flight).
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from harness.localstack import free_port
from system.chassis.inbox import EventConsumer, InboxEntry
from system.chassis.outbox import OutboxMessage, OutboxRelay, Producer, stage
from system.events import Event, OrderItem, OrderPlacedV1, new_event
from tests.conftest import service_db

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("events")]

TOPIC = "orders.events"
Maker = async_sessionmaker[AsyncSession]


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def placed(order_id: str, n: int = 1) -> Event[OrderPlacedV1]:
    item = OrderItem(product_id="p-1", quantity=n, unit_price_cents=250)
    return new_event(
        OrderPlacedV1(order_id=order_id, user_id="u-1", items=[item], total_cents=250 * n)
    )


def last_error(relay: OutboxRelay) -> BaseException | None:
    """The relay's last error, read afresh (it changes behind the awaits)."""
    return relay.last_error


async def eventually(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll ``check`` until it returns something truthy, or fail naming ``what``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for _ in itertools.count():
        if result := check():
            return result
        if loop.time() > deadline:
            break
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


async def read_keys(
    bootstrap: str, keys: set[bytes], count: int, timeout: float = 20.0
) -> list[Any]:
    """The first ``count`` records of ``TOPIC`` with one of ``keys``, in log order per key."""
    consumer = AIOKafkaConsumer(
        TOPIC,
        bootstrap_servers=bootstrap,
        group_id=None,  # no group: every partition, from the beginning
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: list[Any] = []
    try:
        async with asyncio.timeout(timeout):
            while len(found) < count:
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    found.extend(r for r in records if r.key in keys)
    finally:
        await consumer.stop()
    return found


def event_id(record: Any) -> str:
    return bytes(dict(record.headers)["event-id"]).decode()


def spans_of(exporter: InMemorySpanExporter, kind: SpanKind, message_id: str) -> list[ReadableSpan]:
    return [
        s
        for s in exporter.get_finished_spans()
        if s.kind is kind and (s.attributes or {}).get("messaging.message.id") == message_id
    ]


# -- exactly once, one trace ------------------------------------------------------------
@pytest.mark.asyncio
async def test_a_staged_event_is_consumed_once_even_when_delivered_twice(
    bootstrap: str, tmp_path: Path, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    registry = CollectorRegistry()
    order_id = f"o-{uuid.uuid4().hex[:12]}"
    applied: list[uuid.UUID] = []

    async def on_placed(session: AsyncSession, event: Event[Any]) -> None:
        if event.key != order_id:
            return  # the topic also holds other tests' orders
        applied.append(event.id)
        await session.execute(
            text("INSERT INTO effect (event_id, note) VALUES (:id, 'shipped')"),
            {"id": str(event.id)},
        )

    async with service_db(tmp_path, "orders") as orders, service_db(tmp_path, "shipping") as ship:
        relay = OutboxRelay(
            orders, bootstrap, poll_interval=0.2, tracer_provider=provider, registry=registry
        )
        group = f"shipping-{uuid.uuid4().hex[:8]}"
        consumer = EventConsumer(
            ship,
            bootstrap,
            group,
            [TOPIC],
            {"order.placed": on_placed},
            tracer_provider=provider,
            registry=registry,
        )
        await relay.start()
        await consumer.start()
        try:
            event = placed(order_id)
            with provider.get_tracer("test").start_as_current_span("place order") as root:
                async with orders() as session, session.begin():
                    await stage(session, event)
            await asyncio.wait_for(relay.flush(), 20)
            await eventually(lambda: applied, "the consumer applied the event")

            # deliver the very same message again, as a producer retry or a relay crash would
            [original] = await read_keys(bootstrap, {order_id.encode()}, 1)
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
            await producer.start()
            try:
                await producer.send_and_wait(
                    TOPIC, original.value, key=original.key, headers=list(original.headers)
                )
            finally:
                await producer.stop()
            processed = await eventually(
                lambda: (
                    len(spans_of(exporter, SpanKind.CONSUMER, str(event.id))) == 2
                    and spans_of(exporter, SpanKind.CONSUMER, str(event.id))
                ),
                "the second delivery was processed",
            )
        finally:
            await consumer.stop()
            await relay.stop()

        assert applied == [event.id], "the handler ran once"
        async with ship() as session:
            rows = (await session.execute(text("SELECT event_id FROM effect"))).all()
            assert [r[0] for r in rows] == [str(event.id)]
            inbox = select(func.count()).select_from(InboxEntry)
            assert await session.scalar(inbox.where(InboxEntry.event_id == event.id)) == 1
        async with orders() as session:
            [row] = (await session.scalars(select(OutboxMessage))).all()
            assert row.published_at is not None

    outcomes = sorted(str((s.attributes or {}).get("inbox.outcome")) for s in processed)
    assert outcomes == ["duplicate", "processed"]
    assert registry.get_sample_value("outbox_published_total", {"topic": TOPIC}) == 1
    assert (registry.get_sample_value("outbox_lag_seconds_count") or 0) == 1
    lag = [
        registry.get_sample_value(
            "inbox_consumer_lag", {"consumer": group, "topic": TOPIC, "partition": str(p)}
        )
        for p in range(3)
    ]
    assert 0 in lag, "the consumer caught up on the partition it read last"

    # one trace: staging span -> PRODUCER "publish" span -> CONSUMER "process" spans
    [publish] = spans_of(exporter, SpanKind.PRODUCER, str(event.id))
    trace_id = root.get_span_context().trace_id
    assert publish.name == f"{TOPIC} publish"
    assert publish.context.trace_id == trace_id
    assert publish.parent is not None
    assert publish.parent.span_id == root.get_span_context().span_id
    for span in processed:
        assert span.name == f"{TOPIC} process"
        assert span.context.trace_id == trace_id, "the consumer joined the producer's trace"
        assert span.parent is not None
        assert span.parent.span_id == publish.context.span_id


# -- Kafka unreachable ------------------------------------------------------------------
def switchable_factory(target: dict[str, Any]) -> Callable[[], Producer]:
    def factory() -> Producer:
        target["calls"] += 1
        producer: Producer = AIOKafkaProducer(
            bootstrap_servers=target["bootstrap"],
            acks="all",
            enable_idempotence=True,
            request_timeout_ms=2000,
        )
        return producer

    return factory


async def stage_interleaved(maker: Maker, keys: list[str], per_key: int) -> list[Event[Any]]:
    """``per_key`` events for each key, interleaved, one transaction (and wake-up) each."""
    staged = []
    for n in range(per_key):
        for key in keys:
            event = placed(key, n=n + 1)
            async with maker() as session, session.begin():
                await stage(session, event)
            staged.append(event)
    return staged


async def assert_published_in_order(
    bootstrap: str, maker: Maker, keys: list[str], staged: list[Event[Any]]
) -> None:
    records = await read_keys(bootstrap, {k.encode() for k in keys}, len(staged))
    for key in keys:
        sent = [event_id(r) for r in records if r.key == key.encode()]
        expected = [str(e.id) for e in staged if e.key == key]
        # a send that timed out may still have reached Kafka: then it appears twice, and
        # the inbox absorbs the copy; what matters is that first appearances keep the order
        assert list(dict.fromkeys(sent)) == expected, f"order of key {key} kept, none lost"
    async with maker() as session:
        published = select(OutboxMessage.published_at)
        assert all(p is not None for p in (await session.scalars(published)).all())


@pytest.mark.asyncio
async def test_the_relay_keeps_events_while_kafka_is_unreachable(
    bootstrap: str, tmp_path: Path
) -> None:
    target: dict[str, Any] = {"bootstrap": f"127.0.0.1:{free_port()}", "calls": 0}
    keys = [f"a-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"]
    async with service_db(tmp_path, "orders") as orders:
        relay = OutboxRelay(
            orders,
            switchable_factory(target),
            poll_interval=0.2,
            min_backoff=0.05,
            max_backoff=0.3,
            registry=CollectorRegistry(),
        )
        await relay.start()
        try:
            staged = await stage_interleaved(orders, keys, per_key=4)
            await eventually(lambda: target["calls"] >= 3, "repeated connection attempts")
            assert last_error(relay) is not None
            async with orders() as session:
                pending = OutboxMessage.published_at.is_(None)
                count = select(func.count()).select_from(OutboxMessage).where(pending)
                assert await session.scalar(count) == len(staged), "nothing lost, nothing sent"

            target["bootstrap"] = bootstrap  # Kafka is back
            await asyncio.wait_for(relay.flush(), 20)
            assert last_error(relay) is None
        finally:
            await relay.stop()
        await assert_published_in_order(bootstrap, orders, keys, staged)


@asynccontextmanager
async def kafka_cut_off(http: httpx.AsyncClient, proxy: str) -> AsyncIterator[None]:
    """Toxiproxy refuses Kafka connections (and drops the open ones) in the body."""
    (await http.post(proxy, json={"enabled": False})).raise_for_status()
    try:
        yield
    finally:
        (await http.post(proxy, json={"enabled": True})).raise_for_status()


async def unpublished(maker: Maker) -> int:
    async with maker() as session:
        pending = OutboxMessage.published_at.is_(None)
        count = select(func.count()).select_from(OutboxMessage).where(pending)
        return await session.scalar(count) or 0


@pytest.mark.asyncio
async def test_the_relay_survives_kafka_cut_off_mid_flight(
    kafka_stack: dict[str, Any], bootstrap: str, tmp_path: Path
) -> None:
    proxy = f"http://127.0.0.1:{kafka_stack['ports']['toxiproxy']}/proxies/kafka"
    keys = [f"c-{uuid.uuid4().hex[:8]}", f"d-{uuid.uuid4().hex[:8]}"]
    options: dict[str, Any] = {"poll_interval": 0.2, "max_backoff": 0.5, "stall_after": 1.0}
    async with service_db(tmp_path, "orders") as orders, httpx.AsyncClient() as http:
        relay = OutboxRelay(orders, bootstrap, registry=CollectorRegistry(), **options)
        await relay.start()
        try:
            staged = await stage_interleaved(orders, keys, per_key=1)
            await asyncio.wait_for(relay.flush(), 20)  # connected and publishing

            # cut off while connected: the idempotent producer keeps retrying; the relay
            # reports the stall, keeps the rows, and the sends complete once Kafka is back
            async with kafka_cut_off(http, proxy):
                staged += await stage_interleaved(orders, keys, per_key=2)
                await eventually(lambda: relay.last_error, "the stall reported", timeout=15)
                assert isinstance(last_error(relay), TimeoutError)
                assert await unpublished(orders) > 0
            await asyncio.wait_for(relay.flush(), 30)
            assert last_error(relay) is None

            # cut off again, and the service stops: stop() gives up after its grace,
            # the rows stay, and the next start publishes them
            async with kafka_cut_off(http, proxy):
                staged += await stage_interleaved(orders, keys, per_key=1)
                await eventually(lambda: relay.last_error, "the stall reported", timeout=15)
                began = asyncio.get_running_loop().time()
                await relay.stop(grace=1.0)
                assert asyncio.get_running_loop().time() - began < 6.0
                assert await unpublished(orders) == len(keys)
        finally:
            await relay.stop()
        relay = OutboxRelay(orders, bootstrap, registry=CollectorRegistry(), **options)
        await relay.start()
        try:
            await asyncio.wait_for(relay.flush(), 30)
        finally:
            await relay.stop()
        await assert_published_in_order(bootstrap, orders, keys, staged)


async def test_the_catalog_topic_is_compacted_and_the_event_topics_are_not(bootstrap: str) -> None:
    """``products.catalog`` is a table (the latest price per product); a log compacted
    by mistake would lose order events."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = ("products.catalog", "orders.events")
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
        )
    finally:
        await admin.close()
    policies = {
        resource[3]: {entry[0]: entry[1] for entry in resource[4]}["cleanup.policy"]
        for response in responses
        for resource in response.resources
    }
    assert policies == {"products.catalog": "compact", "orders.events": "delete"}
