"""Typed models of the Polygon/Massive stocks feed messages polygon-sink consumes.

Every message on the wire is a JSON object tagged by ``ev``. The models keep readable
attribute names and declare the wire names, e.g. ``Quote.bid_price`` is ``bp`` on the wire.

The event models declare exactly the wire fields the Redis records copy (SPEC §2); they are
required, except a trade's ``c`` (conditions), which Polygon omits when there are none.
Every other wire field (``x``, ``q``, ``z``, ``pt``, ``ds``, ...) is ignored by the model,
so a new or ill-typed extra field never turns a good event into a reject; the raw bytes of
each element are kept by :func:`polygon_core.codec.decode_frame` for the archive.

Numbers are ``int | float``: JSON does not distinguish ``192`` from ``192.0``, and Polygon's
encoder writes integral prices without a decimal point, so an integer stays an integer and
is written back as one.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, TypeAlias

import msgspec

__all__ = [
    "Channel",
    "FairMarketValue",
    "MarketEvent",
    "MinuteAggregate",
    "Number",
    "PolygonEvent",
    "Quote",
    "StatusMessage",
    "Trade",
    "event_time",
]

Number: TypeAlias = int | float


class Channel(StrEnum):
    """The four channels polygon-sink subscribes to; the value is the wire ``ev``."""

    AM = "AM"
    FMV = "FMV"
    T = "T"
    Q = "Q"


class PolygonEvent(msgspec.Struct, tag_field="ev", frozen=True, kw_only=True, gc=False):
    """Base of every message model; ``ev`` is the tag.

    ``gc=False``: events are immutable leaves that never take part in a reference cycle, so
    the cyclic garbage collector need not track them (the service holds one per key).
    """


class MinuteAggregate(PolygonEvent, tag="AM", frozen=True, kw_only=True):
    """``AM``: one-minute bar. Latest-wins compares ``start_ms``."""

    channel: ClassVar[Channel] = Channel.AM

    symbol: str = msgspec.field(name="sym")
    start_ms: Number = msgspec.field(name="s")
    end_ms: Number = msgspec.field(name="e")
    open: Number = msgspec.field(name="o")
    high: Number = msgspec.field(name="h")
    low: Number = msgspec.field(name="l")
    close: Number = msgspec.field(name="c")
    volume: Number = msgspec.field(name="v")
    vwap: Number = msgspec.field(name="vw")
    """The bar's volume-weighted average price (not the day's ``a``)."""


class FairMarketValue(PolygonEvent, tag="FMV", frozen=True, kw_only=True):
    """``FMV``: Polygon's fair market value (Business plans).

    ``timestamp`` is documented as nanoseconds but published examples carry milliseconds;
    it is copied unchanged. Use :func:`polygon_core.clock.to_epoch_ms` to normalise.
    """

    channel: ClassVar[Channel] = Channel.FMV

    symbol: str = msgspec.field(name="sym")
    price: Number = msgspec.field(name="fmv")
    timestamp: Number = msgspec.field(name="t")


class Trade(PolygonEvent, tag="T", frozen=True, kw_only=True):
    """``T``: a trade. ``conditions`` is ``None`` when the wire omits ``c``."""

    channel: ClassVar[Channel] = Channel.T

    symbol: str = msgspec.field(name="sym")
    price: Number = msgspec.field(name="p")
    size: Number = msgspec.field(name="s")
    timestamp_ms: Number = msgspec.field(name="t")
    conditions: list[int] | None = msgspec.field(name="c", default=None)


class Quote(PolygonEvent, tag="Q", frozen=True, kw_only=True):
    """``Q``: an NBBO quote. Sizes are in round lots, as Polygon sends them."""

    channel: ClassVar[Channel] = Channel.Q

    symbol: str = msgspec.field(name="sym")
    bid_price: Number = msgspec.field(name="bp")
    bid_size: Number = msgspec.field(name="bs")
    ask_price: Number = msgspec.field(name="ap")
    ask_size: Number = msgspec.field(name="as")
    timestamp_ms: Number = msgspec.field(name="t")


class StatusMessage(PolygonEvent, tag="status", frozen=True, kw_only=True):
    """``status``: connection, auth and subscription notices. Match on ``status``."""

    status: str
    message: str = ""


MarketEvent: TypeAlias = MinuteAggregate | FairMarketValue | Trade | Quote
"""An event that becomes a Redis record."""


def event_time(event: MarketEvent) -> Number:
    """The time latest-wins compares: the bar start for ``AM``, ``t`` otherwise."""
    if isinstance(event, MinuteAggregate):
        return event.start_ms
    if isinstance(event, FairMarketValue):
        return event.timestamp
    return event.timestamp_ms
