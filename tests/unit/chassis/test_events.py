"""The event schemas: round trips, the registry, errors, and their JSON Schemas."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from system.events import (
    EVENT_TYPES,
    TOPICS,
    Event,
    EventError,
    EventPayload,
    InvalidEvent,
    OrderCancelledV1,
    OrderConfirmedV1,
    OrderItem,
    OrderPlacedV1,
    PaymentAuthorizedV1,
    PaymentCapturedV1,
    PaymentVoidedV1,
    ProductPricedV1,
    ProductWithdrawnV1,
    StockCommittedV1,
    StockItem,
    StockReleasedV1,
    StockReservedV1,
    UnknownEvent,
    UserRegisteredV1,
    decode,
    encode,
    json_schema,
    new_event,
    payload_class,
    registered,
    topic_for,
    uuid7,
)

ITEMS = [
    OrderItem(product_id="p-1", quantity=2, unit_price_cents=1250),
    OrderItem(product_id="p-2", quantity=1, unit_price_cents=99),
]
STOCK = [StockItem(product_id="p-1", quantity=2)]

SAMPLES: dict[tuple[str, int], EventPayload] = {
    ("user.registered", 1): UserRegisteredV1(user_id="u-1", email="a@example.org", role="customer"),
    ("order.placed", 1): OrderPlacedV1(
        order_id="o-1", user_id="u-1", items=ITEMS, total_cents=2599
    ),
    ("order.confirmed", 1): OrderConfirmedV1(
        order_id="o-1", user_id="u-1", items=ITEMS, total_cents=2599, payment_id="pay-1"
    ),
    ("order.cancelled", 1): OrderCancelledV1(
        order_id="o-1", user_id="u-1", items=ITEMS, reason="payment declined"
    ),
    ("payment.authorized", 1): PaymentAuthorizedV1(
        payment_id="pay-1", order_id="o-1", amount_cents=2599
    ),
    ("payment.captured", 1): PaymentCapturedV1(
        payment_id="pay-1", order_id="o-1", amount_cents=2599
    ),
    ("payment.voided", 1): PaymentVoidedV1(payment_id="pay-1", order_id="o-1", amount_cents=2599),
    ("stock.reserved", 1): StockReservedV1(order_id="o-1", items=STOCK),
    ("stock.released", 1): StockReleasedV1(order_id="o-1", items=STOCK),
    ("stock.committed", 1): StockCommittedV1(order_id="o-1", items=STOCK),
    ("product.priced", 1): ProductPricedV1(product_id="p-1", price_cents=1250),
    ("product.withdrawn", 1): ProductWithdrawnV1(product_id="p-1"),
}


def raw_envelope(event_type: str, version: int, data: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "id": str(uuid7()),
            "type": event_type,
            "version": version,
            "occurred_at": "2026-01-02T03:04:05.678+00:00",
            "key": "k",
            "data": data,
        }
    ).encode()


def test_every_registered_type_has_a_sample() -> None:
    assert set(EVENT_TYPES) == set(SAMPLES)


@pytest.mark.parametrize("kind", sorted(SAMPLES), ids=lambda k: f"{k[0]}.v{k[1]}")
def test_round_trip(kind: tuple[str, int]) -> None:
    event = new_event(SAMPLES[kind])
    assert (event.type, event.version) == kind
    raw = encode(event)
    back = decode(raw)
    assert back == event
    assert type(back.data) is payload_class(*kind)
    assert back.occurred_at.tzinfo is not None
    assert encode(back) == raw


def test_new_event_derives_key_topic_and_a_time_ordered_id() -> None:
    event = new_event(SAMPLES[("payment.captured", 1)])
    assert event.key == "o-1", "payment events are keyed by order, like the saga"
    assert event.topic == "payments.events"
    assert event.id.version == 7
    assert abs((datetime.now(UTC) - event.occurred_at).total_seconds()) < 5
    user = new_event(SAMPLES[("user.registered", 1)], key="custom")
    assert user.key == "custom"


def test_uuid7_sorts_by_creation_time() -> None:
    first = uuid7()
    time.sleep(0.002)
    second = uuid7()
    assert first.version == second.version == 7
    assert first.variant == second.variant == "specified in RFC 4122"
    assert first.bytes < second.bytes
    assert len({uuid7() for _ in range(1000)}) == 1000


def test_topics_by_family() -> None:
    assert dict(TOPICS) == {
        "user": "users.events",
        "order": "orders.events",
        "payment": "payments.events",
        "stock": "products.events",
        "product": "products.catalog",
    }
    assert topic_for("order.cancelled") == "orders.events"
    assert topic_for("product.priced") == "products.catalog"
    assert topic_for("stock.reserved") == "products.events"
    with pytest.raises(UnknownEvent, match=r"refund\.issued"):
        topic_for("refund.issued")


def test_unknown_type_or_version_is_a_clear_error() -> None:
    with pytest.raises(UnknownEvent, match=r"order\.shipped v1") as unknown_type:
        decode(raw_envelope("order.shipped", 1, {"order_id": "o"}))
    assert unknown_type.value.event_type == "order.shipped"
    assert unknown_type.value.version == 1
    with pytest.raises(UnknownEvent, match=r"order\.placed v9"):
        decode(raw_envelope("order.placed", 9, {}))
    with pytest.raises(UnknownEvent):
        payload_class("user.deleted", 1)
    assert issubclass(UnknownEvent, EventError)
    assert issubclass(InvalidEvent, EventError)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b'{"type": "order.placed"}',
        raw_envelope("order.placed", 1, {"order_id": "o"}),  # missing fields
        raw_envelope("payment.voided", 1, {"payment_id": "p", "order_id": "o", "amount_cents": -1}),
        raw_envelope(
            "payment.voided", 1, {"payment_id": "p", "order_id": "o", "amount_cents": 1.5}
        ),
        raw_envelope("user.registered", 1, {"user_id": "u", "email": "e", "role": "root"}),
        raw_envelope("stock.reserved", 1, {"order_id": "o", "items": [{"product_id": "p"}]}),
        raw_envelope(
            "stock.reserved", 1, {"order_id": "o", "items": [{"product_id": "p", "quantity": 0}]}
        ),
    ],
    ids=[
        "empty",
        "not-json",
        "no-envelope",
        "missing-fields",
        "negative-cents",
        "fractional-cents",
        "bad-role",
        "item-missing-quantity",
        "zero-quantity",
    ],
)
def test_invalid_messages_raise_invalid_event(raw: bytes) -> None:
    with pytest.raises(InvalidEvent):
        decode(raw)


def test_naive_timestamps_are_invalid() -> None:
    raw = json.loads(raw_envelope("stock.released", 1, {"order_id": "o", "items": []}))
    raw["occurred_at"] = "2026-01-02T03:04:05"
    with pytest.raises(InvalidEvent, match="occurred_at"):
        decode(json.dumps(raw).encode())


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    raw = json.loads(raw_envelope("stock.released", 1, {"order_id": "o", "items": []}))
    raw["data"]["added_later"] = {"x": 1}
    raw["producer"] = "orders-2"
    event = decode(json.dumps(raw).encode())
    assert event.data == StockReleasedV1(order_id="o", items=[])


def test_encode_checks_payload_matches_type() -> None:
    event: Event[Any] = Event(
        id=uuid7(),
        type="order.placed",
        version=1,
        occurred_at=datetime.now(UTC),
        key="o-1",
        data=SAMPLES[("stock.reserved", 1)],
    )
    with pytest.raises(InvalidEvent, match="OrderPlacedV1"):
        encode(event)


def test_unregistered_payloads_cannot_become_events() -> None:
    class Stray(EventPayload, frozen=True, kw_only=True):
        order_id: str

    with pytest.raises(UnknownEvent):
        new_event(Stray(order_id="o"))


def test_registration_rules() -> None:
    with pytest.raises(ValueError, match="already registered"):
        registered("order.placed", 1, key="order_id")(OrderPlacedV1)
    with pytest.raises(ValueError, match="no topic"):
        registered("invoice.sent", 1, key="order_id")
    with pytest.raises(ValueError, match="no key field"):

        @registered("order.placed", 2, key="nope")
        class OrderPlacedV2(EventPayload, frozen=True, kw_only=True):
            order_id: str

    assert ("order.placed", 2) not in EVENT_TYPES


@pytest.mark.parametrize("kind", sorted(SAMPLES), ids=lambda k: f"{k[0]}.v{k[1]}")
def test_json_schema(kind: tuple[str, int]) -> None:
    schema = json_schema(*kind)
    json.dumps(schema)  # plain JSON
    assert schema["$schema"].endswith("2020-12/schema")
    assert schema["$id"] == f"urn:microharness:event:{kind[0]}:v{kind[1]}"
    envelope = schema["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    assert envelope["properties"]["type"] == {"type": "string", "const": kind[0]}
    assert envelope["properties"]["version"] == {"type": "integer", "const": kind[1]}
    assert set(envelope["required"]) == {"id", "type", "version", "occurred_at", "key", "data"}
    payload = schema["$defs"][envelope["properties"]["data"]["$ref"].rsplit("/", 1)[-1]]
    assert set(payload["required"]) == {
        f.name for f in msgspec.structs.fields(payload_class(*kind))
    }
    # the sample message's payload carries exactly the documented fields
    assert set(json.loads(encode(new_event(SAMPLES[kind])))["data"]) == set(payload["properties"])


def test_json_schema_of_money_and_items() -> None:
    schema = json_schema("order.placed", 1)
    item = schema["$defs"]["OrderItem"]
    assert item["properties"]["unit_price_cents"] == {"type": "integer", "minimum": 0}
    assert item["properties"]["quantity"] == {"type": "integer", "exclusiveMinimum": 0}
    with pytest.raises(UnknownEvent):
        json_schema("order.placed", 2)
