"""Hypothesis strategies for events, from the same typed definitions the code decodes
with (``msgspec.inspect``), constraints included: what a producer may legally send.

One small function per kind of type, in :data:`KINDS`; a payload using a new kind fails
loudly until it gets one."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC
from typing import Any

import msgspec
from hypothesis import strategies as st

from system.events.schemas import Event, EventPayload, new_event

inspect = msgspec.inspect
Strategy = st.SearchStrategy[Any]


def _struct(info: Any) -> Strategy:
    fields = {f.name: for_type(f.type) for f in info.fields}
    return st.fixed_dictionaries(fields).map(lambda kw: info.cls(**kw))


def _str(info: Any) -> Strategy:
    if info.pattern:
        return st.from_regex(info.pattern, fullmatch=True)
    return st.text(min_size=info.min_length or 0, max_size=info.max_length or 40)


def _int(info: Any) -> Strategy:
    low = info.ge if info.ge is not None else (info.gt + 1 if info.gt is not None else None)
    high = info.le if info.le is not None else (info.lt - 1 if info.lt is not None else 10**9)
    return st.integers(min_value=low, max_value=high)


def _list(info: Any) -> Strategy:
    return st.lists(
        for_type(info.item_type), min_size=info.min_length or 0, max_size=info.max_length or 4
    )


KINDS: dict[type[Any], Callable[[Any], Strategy]] = {
    inspect.StructType: _struct,
    inspect.StrType: _str,
    inspect.IntType: _int,
    inspect.ListType: _list,
    inspect.LiteralType: lambda info: st.sampled_from(info.values),
    inspect.UUIDType: lambda _info: st.uuids(),
    inspect.DateTimeType: lambda _info: st.datetimes(timezones=st.just(UTC)),
    inspect.BoolType: lambda _info: st.booleans(),
}


def for_type(info: msgspec.inspect.Type) -> Strategy:
    """A strategy for one ``msgspec.inspect`` type."""
    make = KINDS.get(type(info))
    if make is None:
        raise TypeError(f"no strategy for {info!r}: add its kind to contracts/events/strategies.py")
    return make(info)


def payloads(cls: type[EventPayload]) -> st.SearchStrategy[EventPayload]:
    strategy: st.SearchStrategy[EventPayload] = for_type(msgspec.inspect.type_info(cls))
    return strategy


def events(cls: type[EventPayload]) -> st.SearchStrategy[Event[Any]]:
    """Whole events of ``cls``'s type and version."""
    return payloads(cls).map(new_event)
