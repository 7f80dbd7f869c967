"""What the simulator puts on the wire: event Structs, status frames, garbage payloads.

Event Structs encode to the field names and order of ``polygon-protocol.md`` §8 (optional
fields omitted when ``None``); they are not GC-tracked, which matters at a million a second.
"""

from __future__ import annotations

from typing import Any

import msgspec

from polygon_sim.faults import GarbageKind

__all__ = [
    "AUTH_FAILED",
    "AUTH_REQUIRED",
    "AUTH_SUCCESS",
    "AUTH_TIMEOUT",
    "GARBAGE",
    "INVALID_JSON",
    "UNKNOWN_ACTION",
    "Aggregate",
    "Event",
    "FairValue",
    "Quote",
    "Trade",
    "encode",
    "event_channel",
    "event_time",
    "parse_request",
    "status_element",
    "status_frame",
    "wire_tuple",
]


class Trade(msgspec.Struct, tag_field="ev", tag="T", omit_defaults=True, gc=False):
    sym: str
    x: int
    i: str
    z: int
    p: float | int
    s: int
    t: int
    q: int
    c: list[int] | None = None
    pt: int | None = None
    trfi: int | None = None
    trft: int | None = None
    ds: str | None = None


class Quote(msgspec.Struct, tag_field="ev", tag="Q", omit_defaults=True, gc=False):
    sym: str
    bx: int
    ax: int
    bp: float | int
    ap: float | int
    bs: int
    as_: int = msgspec.field(name="as")
    t: int
    q: int
    z: int
    c: int | None = None
    i: list[int] | None = None
    pt: int | None = None


class Aggregate(msgspec.Struct, tag_field="ev", tag="AM", gc=False):
    sym: str
    v: int
    av: int
    op: float | int
    vw: float | int
    o: float | int
    c: float | int
    h: float | int
    l: float | int  # noqa: E741 - the wire name
    a: float | int
    z: int
    s: int
    e: int


class FairValue(msgspec.Struct, tag_field="ev", tag="FMV", gc=False):
    fmv: float | int
    sym: str
    t: int


Event = Trade | Quote | Aggregate | FairValue


_CHANNEL_OF: dict[type, str] = {Trade: "T", Quote: "Q", Aggregate: "AM", FairValue: "FMV"}


def event_channel(event: Event) -> str:
    return _CHANNEL_OF[type(event)]


def event_time(event: Event) -> int:
    """What latest-wins compares: ``s`` for ``AM``, ``t`` otherwise."""
    return event.s if isinstance(event, Aggregate) else event.t


class _Status(msgspec.Struct):
    ev: str
    status: str
    message: str


encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def status_element(status: str, message: str) -> bytes:
    """``{"ev":"status","status":...,"message":...}``"""
    return encode(_Status("status", status, message))


def status_frame(status: str, message: str) -> bytes:
    return b"[" + status_element(status, message) + b"]"


AUTH_SUCCESS = status_frame("auth_success", "authenticated")
AUTH_FAILED = status_frame("auth_failed", "authentication failed")
AUTH_TIMEOUT = status_frame("auth_timeout", "No authentication request received.")
AUTH_REQUIRED = status_frame("auth_required", "authentication required")
INVALID_JSON = status_frame("error", "Invalid JSON")
UNKNOWN_ACTION = status_frame("error", "unknown action")


_OLD = b"1000000000000"  # 2001: garbage never carries a time that could win latest-wins
GARBAGE: dict[GarbageKind, list[bytes]] = {
    GarbageKind.INVALID_JSON: [b'[{"ev":"T","sym":"AAPL","p":192.1,"s":100,"t":17'],
    GarbageKind.NON_ARRAY: [b'{"ev":"T","sym":"AAPL","p":192.1,"s":100,"t":' + _OLD + b"}"],
    GarbageKind.NAN: [
        b'[{"ev":"Q","sym":"AAPL","bp":NaN,"bs":1,"ap":192.2,"as":1,"t":' + _OLD + b"}]"
    ],
    GarbageKind.INVALID_UTF8: [
        b'[{"ev":"T","sym":"AAPL","p":192.1,"s":100,"t":' + _OLD + b',"x":"\xff"}]'
    ],
    GarbageKind.UNKNOWN_EV: [
        b'{"ev":"XYZ","sym":"AAPL","p":1,"t":' + _OLD + b"}",
        b'{"ev":"LULD","T":"MSFT","h":218.96,"l":198.11,"i":[21],"z":3,'
        b'"t":1601316752683746,"q":290317}',
    ],
    GarbageKind.ILL_TYPED: [
        b'{"ev":"T","sym":"AAPL","p":"192.10","s":100,"t":' + _OLD + b"}",
        b'{"ev":"Q","sym":"AAPL","bs":1,"ap":192.2,"as":1,"t":' + _OLD + b"}",
        b'{"ev":"FMV","sym":"AA PL","fmv":1.5,"t":' + _OLD + b"}",
    ],
}


def wire_tuple(event: Event) -> tuple[str, str, int, bytes]:
    return event_channel(event), event.sym, event_time(event), encode(event)


def parse_request(message: str | bytes) -> dict[str, Any] | None:
    """A client control message as a dict, or ``None`` if it is not a JSON object."""
    try:
        value = _decode(message)
    except msgspec.DecodeError:
        return None
    return value if isinstance(value, dict) else None
