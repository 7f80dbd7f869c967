"""Frame decoding.

:func:`decode_frame` turns one WebSocket frame (a JSON array of heterogeneous elements)
into typed events, status messages and rejects. It never raises: every element ends up as
exactly one of an event, a status or a reject with a reason, and one bad element never
sinks the others in its frame (each element is decoded on its own from a
``list[msgspec.Raw]`` first pass, so the raw bytes of every element are at hand for the
archive without re-encoding). On the whole-frame fast path the elements' bytes come from
splitting the frame at its ``},{`` boundaries (one C pass) instead of a second JSON pass,
when that split provably finds exactly the element boundaries (see ``_bodies``).
:mod:`polygon_core.archive_lines` builds SPEC §3's NDJSON lines from those bytes.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeAlias, cast

import msgspec

from polygon_core.events import (
    Channel,
    FairMarketValue,
    MarketEvent,
    MinuteAggregate,
    Quote,
    StatusMessage,
    Trade,
)
from polygon_core.keys import is_valid_symbol

__all__ = [
    "ArchiveEntry",
    "DecodedFrame",
    "FrameDecoder",
    "Reject",
    "RejectReason",
    "decode_frame",
]

EXCERPT_BYTES = 120
_SYMBOL_CACHE_LIMIT = 1 << 16


class RejectReason(StrEnum):
    """Why an element (or a whole frame) produced nothing."""

    INVALID_JSON = "invalid_json"
    """The frame is not valid JSON (also NaN/Infinity literals)."""
    NOT_ARRAY = "not_array"
    """The frame is valid JSON but not an array."""
    NOT_OBJECT = "not_object"
    """An element of the array is not a JSON object."""
    MISSING_EV = "missing_ev"
    UNKNOWN_EV = "unknown_ev"
    """``ev`` is not one of AM, FMV, T, Q, status (e.g. ``A``, ``LULD``) or not a string."""
    MISSING_FIELD = "missing_field"
    INVALID_TYPE = "invalid_type"
    """A copied field has the wrong JSON type (e.g. a string price, a boolean size)."""
    BAD_SYMBOL = "bad_symbol"
    """``sym`` is empty, too long, or holds whitespace, controls or ``*?[]{}:``."""
    NON_FINITE = "non_finite"
    """A number overflows a double (``1e999``) and would become infinity."""


ArchiveEntry: TypeAlias = tuple[Channel, str | None, msgspec.Raw]
"""``(channel, symbol or None, raw element bytes)`` for one archivable element."""


class Reject(msgspec.Struct, frozen=True):
    """One rejected element (or frame): why, a short detail, and the first bytes."""

    reason: RejectReason
    detail: str
    excerpt: bytes
    channel: Channel | None = None
    """Set when the element was an AM/FMV/T/Q object; such rejects are still archived."""
    symbol: str | None = None


class DecodedFrame(msgspec.Struct):
    """What one frame held, each element in exactly one list (arrival order kept)."""

    events: list[MarketEvent]
    statuses: list[StatusMessage]
    rejects: list[Reject]
    entries: list[ArchiveEntry]
    """With ``keep_raw=True`` on the per-element path: every AM/FMV/T/Q element, accepted
    or not, in arrival order. Empty when ``bodies`` is set."""
    bodies: list[bytes] | None = None
    """With ``keep_raw=True`` on the whole-frame fast path: each event's object without its
    braces, one per event in ``events`` (every element was then an accepted event)."""

    @property
    def archive(self) -> list[ArchiveEntry]:
        """Every AM/FMV/T/Q element, accepted or not, in arrival order; filled only when
        decoding with ``keep_raw=True``. Built anew from ``bodies`` on each access (the
        ingest path uses :func:`~polygon_core.archive_lines.archive_blocks` instead)."""
        bodies = self.bodies
        if bodies is None:
            return self.entries
        return [
            (event.channel, event.symbol, msgspec.Raw(b"{" + body + b"}"))
            for event, body in zip(self.events, bodies, strict=True)
        ]

    @property
    def element_count(self) -> int:
        """Elements accounted for (a frame-level reject counts as one)."""
        return len(self.events) + len(self.statuses) + len(self.rejects)


class _Probe(msgspec.Struct):
    """Loose view of a rejected element, to learn its channel and symbol."""

    ev: msgspec.Raw = msgspec.Raw(b"null")
    sym: msgspec.Raw = msgspec.Raw(b"null")


_CHANNELS = {c.value: c for c in Channel}
_ElementType: TypeAlias = MinuteAggregate | FairMarketValue | Trade | Quote | StatusMessage


def _classify(message: str) -> RejectReason:
    """Map a msgspec validation message to a reason (messages are stable across versions)."""
    if "`$.ev`" in message:
        return RejectReason.UNKNOWN_EV
    if message.startswith("Object missing required field `ev`"):
        return RejectReason.MISSING_EV
    if message.startswith("Object missing required field"):
        return RejectReason.MISSING_FIELD
    if message.startswith("Number out of range"):
        return RejectReason.NON_FINITE
    if message.startswith("Expected `object`") and " - at " not in message:
        return RejectReason.NOT_OBJECT
    return RejectReason.INVALID_TYPE


class FrameDecoder:
    """Decodes frames; build one and reuse it (decoders are built once, symbols cached)."""

    __slots__ = ("_frame", "_element", "_whole", "_probe", "_str", "_valid_symbols")

    def __init__(self) -> None:
        self._frame = msgspec.json.Decoder(list[msgspec.Raw])
        self._element = msgspec.json.Decoder(_ElementType)
        self._whole = msgspec.json.Decoder(list[_ElementType])
        self._probe = msgspec.json.Decoder(_Probe)
        self._str = msgspec.json.Decoder(str)
        self._valid_symbols: set[str] = set()

    def decode(
        self, data: bytes | bytearray | memoryview | str, *, keep_raw: bool = False
    ) -> DecodedFrame:
        """Decode one frame. Never raises; see :class:`DecodedFrame`."""
        if not _utf8(data):
            # JSON text is UTF-8 (RFC 8259 §8.1); msgspec does not check strings it skips.
            reject = Reject(RejectReason.INVALID_JSON, "invalid UTF-8", _excerpt(data))
            return DecodedFrame([], [], [reject], [])
        fast = self._decode_whole(data, keep_raw)
        if fast is not None:
            return fast
        events: list[MarketEvent] = []
        statuses: list[StatusMessage] = []
        rejects: list[Reject] = []
        archive: list[ArchiveEntry] = []
        frame = DecodedFrame(events, statuses, rejects, archive)
        try:
            raws = self._frame.decode(data)
        except msgspec.ValidationError as exc:
            # JSON, but not an array (an object, a string, a number even out of range).
            rejects.append(Reject(RejectReason.NOT_ARRAY, str(exc), _excerpt(data)))
            return frame
        except (msgspec.DecodeError, RecursionError, UnicodeError, TypeError) as exc:
            rejects.append(Reject(RejectReason.INVALID_JSON, str(exc), _excerpt(data)))
            return frame
        decode_element = self._element.decode
        valid = self._valid_symbols
        for raw in raws:
            try:
                event = decode_element(raw)
            except (msgspec.ValidationError, RecursionError, UnicodeError) as exc:
                reason = (
                    _classify(str(exc))
                    if isinstance(exc, msgspec.ValidationError)
                    else RejectReason.INVALID_JSON
                )
                reject = self._reject(raw, reason, str(exc))
                rejects.append(reject)
                if keep_raw and reject.channel is not None:
                    archive.append((reject.channel, reject.symbol, raw))
                continue
            if type(event) is StatusMessage:
                statuses.append(event)
                continue
            symbol = event.symbol
            if symbol not in valid:
                if not is_valid_symbol(symbol):
                    rejects.append(
                        Reject(
                            RejectReason.BAD_SYMBOL,
                            f"invalid symbol {symbol[:40]!r}",
                            bytes(raw)[:EXCERPT_BYTES],
                            event.channel,
                            symbol,
                        )
                    )
                    if keep_raw:
                        archive.append((event.channel, symbol, raw))
                    continue
                if len(valid) >= _SYMBOL_CACHE_LIMIT:
                    valid.clear()
                valid.add(symbol)
            events.append(event)
            if keep_raw:
                archive.append((event.channel, symbol, raw))
        return frame

    def _decode_whole(
        self, data: bytes | bytearray | memoryview | str, keep_raw: bool
    ) -> DecodedFrame | None:
        """The fast path: the whole frame in one typed decode, when every element is good.

        Returns ``None`` (use the per-element path) when any element fails validation, the
        frame is not an array or not JSON, or a status or a new symbol needs a closer look.
        """
        try:
            items = self._whole.decode(data)
        except (
            msgspec.ValidationError,
            msgspec.DecodeError,
            RecursionError,
            UnicodeError,
            TypeError,
        ):
            return None
        valid = self._valid_symbols
        for item in items:
            if isinstance(item, StatusMessage) or item.symbol not in valid:
                return None
        events = cast(list[MarketEvent], items)
        if not keep_raw:
            return DecodedFrame(events, [], [], [])
        bodies = _bodies(data, len(events))
        if bodies is not None:
            return DecodedFrame(events, [], [], [], bodies)
        raws = self._frame.decode(data)  # cannot fail: the typed decode just succeeded
        archive: list[ArchiveEntry] = [
            (event.channel, event.symbol, raw) for event, raw in zip(events, raws, strict=True)
        ]
        return DecodedFrame(events, [], [], archive)

    def _reject(self, raw: msgspec.Raw, reason: RejectReason, detail: str) -> Reject:
        channel: Channel | None = None
        symbol: str | None = None
        try:
            probe = self._probe.decode(raw)
        except (msgspec.ValidationError, RecursionError):
            probe = None
        if probe is not None:
            ev = self._as_str(probe.ev)
            channel = None if ev is None else _CHANNELS.get(ev)
            if channel is not None:
                symbol = self._as_str(probe.sym)
        return Reject(reason, detail, bytes(raw)[:EXCERPT_BYTES], channel, symbol)

    def _as_str(self, raw: msgspec.Raw) -> str | None:
        try:
            return self._str.decode(raw)
        except (msgspec.ValidationError, RecursionError):
            return None


def _bodies(data: bytes | bytearray | memoryview | str, count: int) -> list[bytes] | None:
    """The insides of a valid frame's ``count`` objects, by splitting it at ``},{``.

    Only for a frame that just decoded as an array of ``count`` objects and holds no
    whitespace byte: then every boundary between two elements is exactly ``},{``, so the
    split finds at least ``count`` pieces, and exactly ``count`` only when no ``},{`` occurs
    inside an element (in a string, or between objects in a nested array). Otherwise (or for
    anything but ``bytes``) None: the caller takes the exact ``list[Raw]`` pass.
    """
    if type(data) is not bytes or b" " in data or b"\n" in data or b"\r" in data or b"\t" in data:
        return None
    bodies = data.split(b"},{")
    if len(bodies) != count:
        return None
    bodies[0] = bodies[0][2:]  # '[{'
    bodies[-1] = bodies[-1][:-2]  # '}]'
    return bodies


def _utf8(data: bytes | bytearray | memoryview | str) -> bool:
    """Whether ``data`` is valid UTF-8 (a ``str`` always is). Frames are ASCII in practice,
    and ``isascii`` is one fast scan; anything else gets a real decode."""
    if isinstance(data, str):
        return True
    if isinstance(data, memoryview):
        data = data.tobytes()
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _excerpt(data: bytes | bytearray | memoryview | str) -> bytes:
    if isinstance(data, str):
        return data[:EXCERPT_BYTES].encode("utf-8", "replace")
    return bytes(data[:EXCERPT_BYTES])


_default_decoder = FrameDecoder()


def decode_frame(
    data: bytes | bytearray | memoryview | str, *, keep_raw: bool = False
) -> DecodedFrame:
    """Decode one frame with a shared :class:`FrameDecoder`. Never raises."""
    return _default_decoder.decode(data, keep_raw=keep_raw)
