"""The typed, versioned events the services exchange over Kafka.

Every message is an :class:`Event` envelope (JSON) whose ``data`` is the payload Struct
registered for its ``(type, version)``. Rules of evolution:

* a payload version never changes incompatibly: adding an *optional* field (with a
  default) is allowed within a version, anything else is a new version registered beside
  the old one, and producers keep emitting the old version until every consumer reads
  the new one;
* decoders ignore unknown fields (envelope and payload), so an additive change in a
  producer never breaks a consumer;
* money is integer cents, ids are strings, timestamps are timezone-aware (RFC 3339).

The topic is chosen by the event's family (the part of ``type`` before the first dot),
and the partition key (``Event.key``) by the payload's ``__event_key__`` field, so every
event of one order lands, in order, on one partition.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar
from uuid import UUID

import msgspec

__all__ = [
    "EVENT_TYPES",
    "TOPICS",
    "Event",
    "EventError",
    "EventPayload",
    "InvalidEvent",
    "OrderCancelledV1",
    "OrderConfirmedV1",
    "OrderItem",
    "OrderPlacedV1",
    "PaymentAuthorizedV1",
    "PaymentCapturedV1",
    "PaymentVoidedV1",
    "ProductPricedV1",
    "ProductWithdrawnV1",
    "StockCommittedV1",
    "StockItem",
    "StockReleasedV1",
    "StockReservedV1",
    "UnknownEvent",
    "UserRegisteredV1",
    "decode",
    "encode",
    "json_schema",
    "new_event",
    "payload_class",
    "registered",
    "topic_for",
    "uuid7",
]


# -- errors ------------------------------------------------------------------------------
class EventError(ValueError):
    """A message is not an event this code can read."""


class InvalidEvent(EventError):
    """The bytes are not a well-formed event: bad JSON, missing field, wrong type."""


class UnknownEvent(EventError):
    """A well-formed envelope whose ``(type, version)`` (or family) is not registered."""

    def __init__(self, event_type: str, version: int | None = None) -> None:
        self.event_type = event_type
        self.version = version
        what = event_type if version is None else f"{event_type} v{version}"
        super().__init__(f"unknown event {what}")


# -- ids ---------------------------------------------------------------------------------
_MASK_48 = (1 << 48) - 1
_MASK_12 = (1 << 12) - 1
_MASK_62 = (1 << 62) - 1


def uuid7() -> UUID:
    """A time-ordered UUID (RFC 9562 version 7): 48-bit Unix milliseconds, then random."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (
        (millis & _MASK_48) << 80
        | 0x7 << 76
        | ((rand >> 62) & _MASK_12) << 64
        | 0b10 << 62
        | (rand & _MASK_62)
    )
    return UUID(int=value)


# -- payloads ----------------------------------------------------------------------------
NonEmpty = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Cents = Annotated[int, msgspec.Meta(ge=0)]
Quantity = Annotated[int, msgspec.Meta(gt=0)]


class EventPayload(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every payload; subclasses are registered with :func:`registered`."""

    __event_type__: ClassVar[str]
    __event_version__: ClassVar[int]
    __event_key__: ClassVar[str]
    """Name of the payload field used as the partition key."""


P = TypeVar("P", bound=EventPayload)

_PAYLOADS: dict[tuple[str, int], type[EventPayload]] = {}

TOPICS: Mapping[str, str] = {
    "user": "users.events",
    "order": "orders.events",
    "payment": "payments.events",
    "stock": "products.events",
    "product": "products.catalog",
}
"""Event family (``type`` up to the first dot) → Kafka topic."""


def registered(event_type: str, version: int, *, key: str) -> Any:
    """Class decorator: register a payload Struct as ``(event_type, version)``."""
    family = event_type.partition(".")[0]
    if family not in TOPICS:
        raise ValueError(f"event family {family!r} of {event_type!r} has no topic")

    def register(cls: type[P]) -> type[P]:
        if (event_type, version) in _PAYLOADS:
            raise ValueError(f"{event_type} v{version} is already registered")
        if key not in cls.__struct_fields__:
            raise ValueError(f"{cls.__name__} has no key field {key!r}")
        cls.__event_type__ = event_type
        cls.__event_version__ = version
        cls.__event_key__ = key
        _PAYLOADS[(event_type, version)] = cls
        return cls

    return register


class OrderItem(msgspec.Struct, frozen=True, kw_only=True):
    product_id: NonEmpty
    quantity: Quantity
    unit_price_cents: Cents


class StockItem(msgspec.Struct, frozen=True, kw_only=True):
    product_id: NonEmpty
    quantity: Quantity


@registered("user.registered", 1, key="user_id")
class UserRegisteredV1(EventPayload, frozen=True, kw_only=True):
    user_id: NonEmpty
    email: NonEmpty
    role: Literal["customer", "admin"]


@registered("order.placed", 1, key="order_id")
class OrderPlacedV1(EventPayload, frozen=True, kw_only=True):
    order_id: NonEmpty
    user_id: NonEmpty
    items: list[OrderItem]
    total_cents: Cents


@registered("order.confirmed", 1, key="order_id")
class OrderConfirmedV1(EventPayload, frozen=True, kw_only=True):
    order_id: NonEmpty
    user_id: NonEmpty
    items: list[OrderItem]
    total_cents: Cents
    payment_id: NonEmpty


@registered("order.cancelled", 1, key="order_id")
class OrderCancelledV1(EventPayload, frozen=True, kw_only=True):
    order_id: NonEmpty
    user_id: NonEmpty
    items: list[OrderItem]
    reason: str


class _PaymentV1(EventPayload, frozen=True, kw_only=True):
    payment_id: NonEmpty
    order_id: NonEmpty
    amount_cents: Cents


@registered("payment.authorized", 1, key="order_id")
class PaymentAuthorizedV1(_PaymentV1, frozen=True, kw_only=True):
    pass


@registered("payment.captured", 1, key="order_id")
class PaymentCapturedV1(_PaymentV1, frozen=True, kw_only=True):
    pass


@registered("payment.voided", 1, key="order_id")
class PaymentVoidedV1(_PaymentV1, frozen=True, kw_only=True):
    pass


class _StockV1(EventPayload, frozen=True, kw_only=True):
    order_id: NonEmpty
    items: list[StockItem]


@registered("stock.reserved", 1, key="order_id")
class StockReservedV1(_StockV1, frozen=True, kw_only=True):
    pass


@registered("stock.released", 1, key="order_id")
class StockReleasedV1(_StockV1, frozen=True, kw_only=True):
    pass


@registered("stock.committed", 1, key="order_id")
class StockCommittedV1(_StockV1, frozen=True, kw_only=True):
    pass


@registered("product.priced", 1, key="product_id")
class ProductPricedV1(EventPayload, frozen=True, kw_only=True):
    """A product's price as the catalog has it now: sent when the product is created and
    whenever its price changes. The latest per product is the price (the topic is
    compacted: a new consumer reads one event per product)."""

    product_id: NonEmpty
    price_cents: Cents


@registered("product.withdrawn", 1, key="product_id")
class ProductWithdrawnV1(EventPayload, frozen=True, kw_only=True):
    """The product left the catalog: nobody can order it any more."""

    product_id: NonEmpty


EVENT_TYPES: Mapping[tuple[str, int], type[EventPayload]] = _PAYLOADS
"""``(type, version)`` → payload Struct (a live, read-only view of the registry)."""


# -- envelope ----------------------------------------------------------------------------
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]


class Event(msgspec.Struct, Generic[P], frozen=True, kw_only=True):
    """The envelope of every message on the bus; build one with :func:`new_event`."""

    id: UUID
    type: str
    version: int
    occurred_at: AwareDatetime
    key: str
    """Partition key: every event with the same key is kept in order."""
    data: P

    @property
    def topic(self) -> str:
        return topic_for(self.type)


class _RawEvent(msgspec.Struct, kw_only=True):
    id: UUID
    type: str
    version: int
    occurred_at: AwareDatetime
    key: str
    data: msgspec.Raw


_ENCODER = msgspec.json.Encoder()
_RAW_DECODER = msgspec.json.Decoder(_RawEvent)
_DECODERS: dict[type[EventPayload], msgspec.json.Decoder[Any]] = {}


def payload_class(event_type: str, version: int) -> type[EventPayload]:
    try:
        return _PAYLOADS[(event_type, version)]
    except KeyError:
        raise UnknownEvent(event_type, version) from None


def topic_for(event_type: str) -> str:
    """The topic of an event type's family (``order.placed`` → ``orders.events``)."""
    try:
        return TOPICS[event_type.partition(".")[0]]
    except KeyError:
        raise UnknownEvent(event_type) from None


def new_event(
    data: P,
    *,
    key: str | None = None,
    event_id: UUID | None = None,
    occurred_at: datetime | None = None,
) -> Event[P]:
    """Wrap a registered payload; type, version and key come from its class."""
    cls = type(data)
    if (
        getattr(cls, "__event_type__", None) is None
        or _PAYLOADS.get((cls.__event_type__, cls.__event_version__)) is not cls
    ):
        raise UnknownEvent(cls.__name__)
    return Event(
        id=event_id or uuid7(),
        type=cls.__event_type__,
        version=cls.__event_version__,
        occurred_at=occurred_at or datetime.now(UTC),
        key=key if key is not None else str(getattr(data, cls.__event_key__)),
        data=data,
    )


def encode(event: Event[Any]) -> bytes:
    """The JSON bytes of ``event`` (checked: its payload must match its type/version)."""
    cls = payload_class(event.type, event.version)
    if type(event.data) is not cls:
        raise InvalidEvent(
            f"{event.type} v{event.version} needs {cls.__name__}, got {type(event.data).__name__}"
        )
    return _ENCODER.encode(event)


def decode(raw: bytes) -> Event[Any]:
    """Parse and validate one message; :class:`UnknownEvent` or :class:`InvalidEvent`."""
    try:
        envelope = _RAW_DECODER.decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidEvent(f"not an event envelope: {exc}") from None
    cls = payload_class(envelope.type, envelope.version)
    decoder = _DECODERS.get(cls)
    if decoder is None:
        decoder = _DECODERS[cls] = msgspec.json.Decoder(cls)
    try:
        data = decoder.decode(envelope.data)
    except msgspec.DecodeError as exc:
        raise InvalidEvent(f"invalid {envelope.type} v{envelope.version}: {exc}") from None
    return Event(
        id=envelope.id,
        type=envelope.type,
        version=envelope.version,
        occurred_at=envelope.occurred_at,
        key=envelope.key,
        data=data,
    )


def json_schema(event_type: str, version: int) -> dict[str, Any]:
    """The JSON Schema (2020-12) of a whole message of ``(type, version)``."""
    cls = payload_class(event_type, version)
    schema: dict[str, Any] = msgspec.json.schema(Event[cls])  # type: ignore[valid-type]
    ref = schema["$ref"].rsplit("/", 1)[-1]
    envelope = schema["$defs"][ref]
    envelope["properties"]["type"] = {"type": "string", "const": event_type}
    envelope["properties"]["version"] = {"type": "integer", "const": version}
    envelope["title"] = f"{event_type} v{version}"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"urn:microharness:event:{event_type}:v{version}"
    return schema
