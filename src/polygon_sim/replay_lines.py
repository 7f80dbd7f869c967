"""Archive bytes -> replayable events: gunzip when gzipped, split lines, undo the line head.

Pure (bytes in, events out). An archive line (SPEC §3, :mod:`polygon_core.archive_lines`)
is ``{"channel":"T","symbol":"AAPL","ingestTs":"2025-05-07T14:12:03.456Z",<the wire
element's fields as received>}``; :func:`parse_line` gives back the wire element byte for
byte (``{"ev":"T","sym":"AAPL",...}``) with its channel, symbol and ingest time. A line
written by another writer (other spacing, other field order) is taken apart field by field,
each value kept byte for byte. A line that is not a JSON object with a known ``channel``
and a valid ``ingestTs`` is ``None`` (the caller counts it).
"""

from __future__ import annotations

import calendar
import zlib

import msgspec

from polygon_core.events import Channel

__all__ = ["LineSplitter", "ReplayEvent", "parse_ingest_ms", "parse_line"]

_GZIP_MAGIC = b"\x1f\x8b"
_CHANNELS = {c.value: c for c in Channel}
_HEAD_FIELDS = ("channel", "symbol", "ingestTs")
_encode = msgspec.json.encode
_decode_fields = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_decode_str = msgspec.json.Decoder(str | None).decode


class LineSplitter:
    """Chunks of one object in, whole lines out; gunzips when the object is gzipped
    (concatenated gzip members included), detected by its first bytes."""

    __slots__ = ("_rest", "_inflate", "_started")

    def __init__(self) -> None:
        self._rest = b""
        self._inflate: zlib._Decompress | None = None
        self._started = False

    def feed(self, chunk: bytes) -> list[bytes]:
        """The lines completed by ``chunk`` (without their ``\\n``; blank lines dropped)."""
        if not self._started:
            head = self._rest + chunk
            if len(head) < 2:
                self._rest = head
                return []
            self._started, self._rest, chunk = True, b"", head
            if head.startswith(_GZIP_MAGIC):
                self._inflate = zlib.decompressobj(wbits=31)
        if self._inflate is not None:
            chunk = self._gunzip(chunk)
        data = self._rest + chunk if self._rest else chunk
        end = data.rfind(b"\n")
        if end < 0:
            self._rest = data
            return []
        self._rest = data[end + 1 :]
        return [line for line in data[:end].split(b"\n") if line.strip()]

    def finish(self) -> list[bytes]:
        """The last line when the object does not end in ``\\n``; ``ValueError`` when a
        gzipped object is cut short."""
        if self._inflate is not None and not self._inflate.eof:
            raise ValueError("gzipped object ends before its gzip stream does")
        rest, self._rest = self._rest, b""
        return [rest] if rest.strip() else []

    def _gunzip(self, chunk: bytes) -> bytes:
        out = []
        inflate = self._inflate
        while chunk and inflate is not None:
            try:
                out.append(inflate.decompress(chunk))
            except zlib.error as exc:
                raise ValueError(f"bad gzip data: {exc}") from exc
            chunk = inflate.unused_data
            if inflate.eof and chunk:  # another gzip member follows
                inflate = self._inflate = zlib.decompressobj(wbits=31)
        return b"".join(out)


class ReplayEvent(msgspec.Struct, frozen=True, gc=False):
    """One archived wire element: where it goes and when it was received."""

    ingest_ms: int
    channel: Channel
    symbol: str | None
    raw: bytes
    """The wire element as received (a JSON object)."""


_SECONDS: dict[bytes, int] = {}


def parse_ingest_ms(stamp: bytes) -> int | None:
    """``2025-05-07T14:12:03.456Z`` (the archive's ``ingestTs``) -> epoch ms, else ``None``."""
    if len(stamp) != 24 or stamp[19:20] != b"." or stamp[23:24] != b"Z":
        return None
    seconds = _SECONDS.get(stamp[:19])
    if seconds is None:
        try:
            s = stamp[:19].decode("ascii")
            parts = (int(s[0:4]), int(s[5:7]), int(s[8:10]), int(s[11:13]), int(s[14:16]))
            second = int(s[17:19])
        except ValueError:
            return None
        if s[4] + s[7] + s[10] + s[13] + s[16] != "--T::" or not 1 <= parts[1] <= 12:
            return None
        seconds = calendar.timegm((*parts, second, 0, 0, 0))
        if len(_SECONDS) >= 4096:
            _SECONDS.clear()
        _SECONDS[stamp[:19]] = seconds
    millis = stamp[20:23]
    if not millis.isdigit():
        return None
    return seconds * 1000 + int(millis)


_SYMBOLS: dict[bytes, str | None] = {}
"""The symbol's JSON -> the symbol (bounded)."""
_UNKNOWN = "\x00unknown"
_PREFIX = b'{"channel":"'
_SYMBOL = b'","symbol":'
_INGEST = b',"ingestTs":"'


def parse_line(line: bytes) -> ReplayEvent | None:
    """One archive line -> its event (see the module docstring); ``None`` if unusable."""
    if line.startswith(_PREFIX):
        fast = _parse_own(line)
        if fast is not None:
            return fast
    return _parse_any(line.strip())


def _parse_own(line: bytes) -> ReplayEvent | None:
    """This service's head, read by position (the symbol JSON string decoded)."""
    at = line.find(_SYMBOL, 12, 30)
    if at < 0:
        return None
    channel = _CHANNELS.get(line[12:at].decode("ascii", "replace"))
    start = at + len(_SYMBOL)
    ts_at = line.find(_INGEST, start)
    if channel is None or ts_at < 0:
        return None
    symbol_json = line[start:ts_at]
    symbol = _SYMBOLS.get(symbol_json, _UNKNOWN)
    if symbol is _UNKNOWN:
        try:
            symbol = _decode_str(symbol_json)
        except msgspec.DecodeError:
            return None  # the symbol held the marker bytes: let the slow path read it
        if len(_SYMBOLS) >= 1 << 16:
            _SYMBOLS.clear()
        _SYMBOLS[symbol_json] = symbol
    stamp_at = ts_at + len(_INGEST)
    ingest_ms = parse_ingest_ms(line[stamp_at : stamp_at + 24])
    rest = line[stamp_at + 25 :].rstrip()
    if ingest_ms is None or line[stamp_at + 24 : stamp_at + 25] != b'"' or not rest.endswith(b"}"):
        return None
    if rest[:1] == b",":
        return ReplayEvent(ingest_ms, channel, symbol, b"{" + rest[1:])
    if rest == b"}":
        return ReplayEvent(ingest_ms, channel, symbol, b"{}")
    return None


def _parse_any(line: bytes) -> ReplayEvent | None:
    try:
        fields = _decode_fields(line)
        channel = _CHANNELS.get(msgspec.json.decode(fields["channel"]))
        symbol = _decode_str(fields["symbol"]) if "symbol" in fields else None
        stamp = msgspec.json.decode(fields["ingestTs"])
    except (msgspec.DecodeError, KeyError, TypeError):
        return None
    if channel is None or not isinstance(stamp, str):
        return None
    ingest_ms = parse_ingest_ms(stamp.encode())
    if ingest_ms is None:
        return None
    body = b",".join(
        _encode(name) + b":" + bytes(value)
        for name, value in fields.items()
        if name not in _HEAD_FIELDS
    )
    return ReplayEvent(ingest_ms, channel, symbol, b"{" + body + b"}")
