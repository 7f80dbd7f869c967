"""Event -> Redis record: the public mapping other services import (SPEC §2).

Each record is a msgspec Struct whose fields are exactly SPEC §2's JSON fields, in order.
Numbers are copied from the event unchanged (``int`` stays ``int``, a ``float`` keeps its
value); a trade without conditions gets ``[]``; ``updatedAt`` is the caller's time.

>>> from polygon_core.codec import decode_frame
>>> frame = decode_frame(b'[{"ev":"Q","sym":"AAPL","bp":192,"bs":2,"ap":192.5,"as":3,"t":1}]')
>>> encode_record(frame.events[0], "2025-05-07T15:04:05.000Z")
b'{"symbol":"AAPL","bid":192,"bidSize":2,"ask":192.5,"askSize":3,"ts":1,"updatedAt":"2025-05-07T15:04:05.000Z"}'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import msgspec

from polygon_core.events import (
    FairMarketValue,
    MarketEvent,
    MinuteAggregate,
    Number,
    Quote,
    Trade,
)
from polygon_core.keys import KEY_PREFIXES, TtlPolicy
from polygon_core.ports import LatestValue

__all__ = [
    "FairMarketValueRecord",
    "MinuteAggregateRecord",
    "QuoteRecord",
    "Record",
    "TradeRecord",
    "encode_record",
    "to_latest_value",
    "to_record",
]


# Attribute names are the JSON field names of the contract (hence camelCase).


class MinuteAggregateRecord(msgspec.Struct, frozen=True):
    """Value of ``stock:agg1m:{S}``."""

    symbol: str
    start: Number
    end: Number
    open: Number
    high: Number
    low: Number
    close: Number
    volume: Number
    vwap: Number
    updatedAt: str


class FairMarketValueRecord(msgspec.Struct, frozen=True):
    """Value of ``stock:fmv:{S}``."""

    symbol: str
    price: Number
    ts: Number
    updatedAt: str


class TradeRecord(msgspec.Struct, frozen=True):
    """Value of ``stock:trade:{S}``."""

    symbol: str
    price: Number
    ts: Number
    size: Number
    conditions: list[int]
    updatedAt: str


class QuoteRecord(msgspec.Struct, frozen=True):
    """Value of ``stock:quote:{S}``."""

    symbol: str
    bid: Number
    bidSize: Number
    ask: Number
    askSize: Number
    ts: Number
    updatedAt: str


Record: TypeAlias = MinuteAggregateRecord | FairMarketValueRecord | TradeRecord | QuoteRecord


def _quote(event: Quote, updated_at: str) -> QuoteRecord:
    return QuoteRecord(
        event.symbol,
        event.bid_price,
        event.bid_size,
        event.ask_price,
        event.ask_size,
        event.timestamp_ms,
        updated_at,
    )


def _trade(event: Trade, updated_at: str) -> TradeRecord:
    conditions = event.conditions
    return TradeRecord(
        event.symbol,
        event.price,
        event.timestamp_ms,
        event.size,
        [] if conditions is None else conditions,
        updated_at,
    )


def _aggregate(event: MinuteAggregate, updated_at: str) -> MinuteAggregateRecord:
    return MinuteAggregateRecord(
        event.symbol,
        event.start_ms,
        event.end_ms,
        event.open,
        event.high,
        event.low,
        event.close,
        event.volume,
        event.vwap,
        updated_at,
    )


def _fair_value(event: FairMarketValue, updated_at: str) -> FairMarketValueRecord:
    return FairMarketValueRecord(event.symbol, event.price, event.timestamp, updated_at)


_RECORD_OF: dict[type, Callable[[Any, str], Record]] = {
    Quote: _quote,
    Trade: _trade,
    MinuteAggregate: _aggregate,
    FairMarketValue: _fair_value,
}
"""Event type -> its record builder (one dict lookup instead of an ``isinstance`` chain:
the flush maps every written value)."""


def to_record(event: MarketEvent, updated_at: str) -> Record:
    """The record for ``event``; ``updated_at`` is an :func:`~polygon_core.timestamps.iso_ms`
    string (the time the record is produced)."""
    return _RECORD_OF[type(event)](event, updated_at)


_encode = msgspec.json.Encoder().encode


def encode_record(event: MarketEvent, updated_at: str) -> bytes:
    """The record for ``event`` as compact UTF-8 JSON bytes, ready for ``SET``."""
    return _encode(_RECORD_OF[type(event)](event, updated_at))


def to_latest_value(event: MarketEvent, updated_at: str, ttl: TtlPolicy) -> LatestValue:
    """Key, encoded record and TTL for ``event``: what a :class:`LatestStore` writes.

    The event's symbol must be valid (events from :func:`decode_frame` always are).
    """
    channel = event.channel
    return LatestValue(
        KEY_PREFIXES[channel] + event.symbol,
        encode_record(event, updated_at),
        ttl.for_channel(channel),
    )
