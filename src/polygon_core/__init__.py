"""polygon_core: the pure domain core of polygon-sink (msgspec + standard library only).

Decode Polygon/Massive stocks frames, map events to the Redis records of the contract,
conflate latest values, and build archive lines. No I/O, no clock, no environment: other
services import this package to decode and map the same events. See ``docs/library.md``.

The names re-exported here are the stable public API.
"""

from __future__ import annotations

from polygon_core.archive_lines import archive_line
from polygon_core.codec import (
    ArchiveEntry,
    DecodedFrame,
    FrameDecoder,
    Reject,
    RejectReason,
    decode_frame,
)
from polygon_core.conflation import ConflationBuffer
from polygon_core.events import (
    Channel,
    FairMarketValue,
    MarketEvent,
    MinuteAggregate,
    PolygonEvent,
    Quote,
    StatusMessage,
    Trade,
    event_time,
)
from polygon_core.keys import KEY_PREFIXES, TtlPolicy, is_valid_symbol, key_for
from polygon_core.mappers import (
    FairMarketValueRecord,
    MinuteAggregateRecord,
    QuoteRecord,
    Record,
    TradeRecord,
    encode_record,
    to_latest_value,
    to_record,
)
from polygon_core.ports import LatestValue
from polygon_core.timestamps import iso_ms, to_epoch_ms

__all__ = [
    "KEY_PREFIXES",
    "ArchiveEntry",
    "Channel",
    "ConflationBuffer",
    "DecodedFrame",
    "FairMarketValue",
    "FairMarketValueRecord",
    "FrameDecoder",
    "LatestValue",
    "MarketEvent",
    "MinuteAggregate",
    "MinuteAggregateRecord",
    "PolygonEvent",
    "Quote",
    "QuoteRecord",
    "Record",
    "Reject",
    "RejectReason",
    "StatusMessage",
    "Trade",
    "TradeRecord",
    "TtlPolicy",
    "archive_line",
    "decode_frame",
    "encode_record",
    "event_time",
    "is_valid_symbol",
    "iso_ms",
    "key_for",
    "to_epoch_ms",
    "to_latest_value",
    "to_record",
]
