"""SPEC §3's NDJSON archive lines, built from the raw bytes of decoded elements.

:func:`archive_line` is the reference: one element's line,
``{"channel":..,"symbol":..,"ingestTs":..,<the wire fields exactly as received>}``.
:func:`archive_blocks` builds a whole frame's lines joined per channel, byte for byte the
lines :func:`archive_line` gives for its elements (property-tested and fuzzed).

On the decoder's whole-frame fast path (``DecodedFrame.bodies``: the frame split at its
``},{`` boundaries) a block is one ``bytes.join`` over cached heads, the frame's stamp and
the bodies; heads are cached per channel and symbol (self-filling, bounded dicts).
"""

from __future__ import annotations

import msgspec

from polygon_core.codec import DecodedFrame
from polygon_core.events import (
    Channel,
    FairMarketValue,
    MinuteAggregate,
    Quote,
    Trade,
)

__all__ = ["archive_blocks", "archive_line"]

_encode_str = msgspec.json.Encoder().encode
_LINE_PREFIX = {c: b'{"channel":"' + c.value.encode() + b'","symbol":' for c in Channel}
_HEADS_LIMIT = 1 << 16
_BREAKS_TO_SPACES = bytes.maketrans(b"\r\n", b"  ")
_LINE_END = b"}\n"


def _make_head(channel: Channel, symbol: str | None) -> bytes:
    """``{"channel":..,"symbol":..,"ingestTs":"`` for a channel and symbol."""
    symbol_json = b"null" if symbol is None else _encode_str(symbol)
    return b"".join((_LINE_PREFIX[channel], symbol_json, b',"ingestTs":"'))


class _Heads(dict[tuple[Channel, str | None], bytes]):
    """``(channel, symbol)`` -> the line head; a missing head is built on lookup
    (``__missing__``); the cache is bounded by emptying it."""

    def __missing__(self, key: tuple[Channel, str | None]) -> bytes:
        head = _make_head(*key)
        if len(self) >= _HEADS_LIMIT:
            self.clear()
        self[key] = head
        return head


class _Joins(dict[str, bytes]):
    """One channel's ``symbol`` -> ``}\\n`` + the line head: the end of the line before and
    the head of the next, one piece on the fast path. Self-filling and bounded like
    :class:`_Heads`."""

    __slots__ = ("channel",)

    def __init__(self, channel: Channel) -> None:
        super().__init__()
        self.channel = channel

    def __missing__(self, symbol: str) -> bytes:
        join = _LINE_END + _make_head(self.channel, symbol)
        if len(self) >= _HEADS_LIMIT:
            self.clear()
        self[symbol] = join
        return join


_HEADS = _Heads()
_EVENT_TYPES = (MinuteAggregate, FairMarketValue, Trade, Quote)
_JOINS_BY_TYPE: dict[type, _Joins] = {cls: _Joins(cls.channel) for cls in _EVENT_TYPES}


def archive_line(
    channel: Channel, symbol: str | None, ingest_ts: bytes, raw: msgspec.Raw | bytes
) -> bytes:
    """SPEC §3's NDJSON line for one element, ending in ``\\n``.

    ``ingest_ts`` is the already formatted ``iso_ms`` time as bytes (format it once per
    frame). The element's own fields follow byte for byte, ``ev`` and ``sym`` included,
    except that line breaks between its tokens become spaces, so the line stays one line
    (a raw line break cannot occur inside a JSON string, so nothing else changes).
    """
    data = raw if type(raw) is bytes else bytes(raw)
    if b"\n" in data or b"\r" in data:
        data = data.translate(_BREAKS_TO_SPACES)
    body = memoryview(data)
    head = _HEADS[(channel, symbol)]
    if len(body) > 1 and body[1] == 0x22:  # the usual shape: {"ev":... (no whitespace, not empty)
        return b"".join((head, ingest_ts, b'",', body[1:], b"\n"))
    start = 1  # skip the element's opening brace and any whitespace after it
    end = len(body)
    while start < end and body[start] in b" \t\r\n":
        start += 1
    sep = b"" if start < end and body[start] == 0x7D else b","  # "}" means an empty object
    return b"".join((head, ingest_ts, b'"', sep, body[start:], b"\n"))


def archive_blocks(frame: DecodedFrame, ingest_ts: bytes) -> list[tuple[Channel, bytes, int]]:
    """A frame's archive lines joined per channel: ``(channel, lines, line count)``, in
    order of each channel's first element. Each block equals the :func:`archive_line` of
    its elements joined, byte for byte; ``ingest_ts`` as there.
    """
    bodies = frame.bodies
    if bodies is None:
        chunks: dict[Channel, list[bytes]] = {}
        for channel, symbol, raw in frame.entries:
            line = archive_line(channel, symbol, ingest_ts, raw)
            lines = chunks.get(channel)
            if lines is None:
                chunks[channel] = [line]
            else:
                lines.append(line)
        return [(channel, b"".join(lines), len(lines)) for channel, lines in chunks.items()]
    # The fast path: each body is an accepted event's object without its braces. Each
    # element adds "}\n" + head (the end of the line before and its own head, one cached
    # piece), the stamp and its body; the first loses its "}\n", the block ends with "}\n".
    stamp = ingest_ts + b'",'
    parts: dict[type, list[bytes]] = {}
    joins = _JOINS_BY_TYPE
    for event, body in zip(frame.events, bodies, strict=True):
        kind = type(event)
        pieces = parts.get(kind)
        if pieces is None:
            parts[kind] = [joins[kind][event.symbol][2:], stamp, body]
        else:
            pieces += (joins[kind][event.symbol], stamp, body)
    blocks: list[tuple[Channel, bytes, int]] = []
    for kind, pieces in parts.items():
        count = len(pieces) // 3
        pieces.append(_LINE_END)
        blocks.append((kind.channel, b"".join(pieces), count))
    return blocks
