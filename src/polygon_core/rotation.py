"""S3 archive policy: time windows, object keys, rotation and multipart part sizing.

Pure functions and small value types; no I/O, no clock, no environment. The S3
adapter asks this module *what* to do; it does the uploading itself.

Windows
    Ingest time (UTC, epoch ms, from the ``Clock`` port) is cut into windows of
    ``window_minutes`` aligned to the clock: the first window of a day starts at UTC
    midnight, the next one ``window_minutes`` later, and so on. When
    ``window_minutes`` does not divide 1440 the last window of the day is cut short
    at midnight, so windows are aligned, contiguous, non-overlapping and never cross
    a day. ``end_ms`` is exclusive and equals the next window's ``start_ms``.

Keys (SPEC §3)
    ``{prefix}/channel={ch}/ingest_dt=YYYY/MM/DD/hour=HH/part=YYYYMMDD_HHMM-YYYYMMDD_HHMM/
    {hostname}-seq=000001.ndjson``. Date and hour come from the window start; ``part=``
    names the window's first and last minute (10:00-10:30 is
    ``part=20250507_1000-20250507_1029``). ``seq`` counts objects within one
    (channel, window) from 1, zero-padded to six digits (more digits past 999999).
    While an upload is open, ``uploading.marker`` sits in the same ``part=`` folder.

Rotation
    An object belongs to one window and one channel. The adapter starts a new object
    when the window changes, or when ``RotationPolicy.should_rotate`` says appending
    the next line would take a non-empty object over ``max_object_bytes``. A line
    larger than the limit therefore goes alone into its own object; no object is ever
    empty (the adapter opens an upload lazily, with the first line). Windows never go
    back: if the clock steps back, keep filing into the newest window
    (``max(window_for(now), open_window)``); ``SeqCounter`` refuses older windows.

Multipart limits (Amazon S3 User Guide, "Amazon S3 multipart upload limits")
    - part size 5 MiB to 5 GiB; only the last part may be smaller than 5 MiB;
    - at most 10,000 parts per upload, part numbers 1 to 10,000;
    - at most 5 TiB per object.

    ``effective_part_size`` raises the configured part size until an object of
    ``max_object_bytes`` fits in 10,000 parts. The adapter cuts a part at the first
    line end at or past ``part_size_bytes`` (``part_ready``), so every part holds
    whole lines and every part but the last is at least ``part_size_bytes`` (at most
    one line more); on completion the remainder is the last part. An object of
    ``max_object_bytes`` then still takes at most 10,000 parts. ``plan_parts`` gives
    the sizes of the same object cut at exact multiples (an upper bound on the count).

    Empty objects: ``CompleteMultipartUpload`` needs at least one part, and
    ``plan_parts(0, ...)`` is ``[]``. An upload holding no data (possible only after a
    crash) must be aborted with ``AbortMultipartUpload``, never completed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

__all__ = [
    "MARKER_NAME",
    "MAX_OBJECT_BYTES_S3",
    "MAX_PARTS",
    "MAX_PART_BYTES",
    "MIN_PART_BYTES",
    "RotationPolicy",
    "SeqCounter",
    "Window",
    "channel_prefix",
    "effective_part_size",
    "marker_key",
    "max_multipart_bytes",
    "next_window",
    "object_key",
    "object_name",
    "part_folder",
    "plan_parts",
    "safe_hostname",
    "seq_from_key",
    "window_folder",
    "window_for",
]

MIN_PART_BYTES = 5 * 1024 * 1024
"""Smallest part S3 accepts, except for the last part of an upload (5 MiB)."""
MAX_PART_BYTES = 5 * 1024**3
"""Largest part S3 accepts (5 GiB)."""
MAX_PARTS = 10_000
"""Most parts in one multipart upload."""
MAX_OBJECT_BYTES_S3 = 5 * 1024**4
"""Largest S3 object (5 TiB)."""
MARKER_NAME = "uploading.marker"

_MINUTE_MS = 60_000
_DAY_MS = 1440 * _MINUTE_MS
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNSAFE_HOST_CHAR = re.compile(r"[/\s]")


@dataclass(frozen=True, slots=True, order=True)
class Window:
    """A half-open UTC interval ``[start_ms, end_ms)`` in epoch milliseconds."""

    start_ms: int
    end_ms: int

    def __post_init__(self) -> None:
        if self.end_ms <= self.start_ms:
            raise ValueError(f"window end {self.end_ms} must be after start {self.start_ms}")

    def contains(self, ts_ms: int) -> bool:
        return self.start_ms <= ts_ms < self.end_ms

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms


def _check_window_minutes(window_minutes: int) -> None:
    if not 1 <= window_minutes <= 1440:
        raise ValueError(f"window_minutes must be in 1..1440, got {window_minutes}")


def window_for(ingest_ms: int, window_minutes: int) -> Window:
    """The clock-aligned window containing ``ingest_ms`` (UTC epoch ms)."""
    _check_window_minutes(window_minutes)
    day_start = ingest_ms - ingest_ms % _DAY_MS
    size_ms = window_minutes * _MINUTE_MS
    start = day_start + (ingest_ms - day_start) // size_ms * size_ms
    return Window(start, min(start + size_ms, day_start + _DAY_MS))


def next_window(window: Window, window_minutes: int) -> Window:
    """The window right after ``window``; it starts at ``window.end_ms``."""
    return window_for(window.end_ms, window_minutes)


def _utc(ms: int) -> datetime:
    try:
        return _EPOCH + timedelta(milliseconds=ms)
    except OverflowError as exc:
        raise ValueError(f"timestamp {ms} ms is outside the supported date range") from exc


def _stamp(ms: int) -> str:
    t = _utc(ms)
    return f"{t.year:04d}{t.month:02d}{t.day:02d}_{t.hour:02d}{t.minute:02d}"


def part_folder(window: Window) -> str:
    """``part=YYYYMMDD_HHMM-YYYYMMDD_HHMM``: the window's first and last minute."""
    last_minute_ms = (window.end_ms - 1) // _MINUTE_MS * _MINUTE_MS
    return f"part={_stamp(window.start_ms)}-{_stamp(last_minute_ms)}"


def safe_hostname(hostname: str) -> str:
    """``hostname`` with ``/`` and whitespace replaced by ``_``; empty is an error."""
    if not hostname:
        raise ValueError("hostname must not be empty")
    return _UNSAFE_HOST_CHAR.sub("_", hostname)


def _check_channel(channel: str) -> None:
    if not channel or _UNSAFE_HOST_CHAR.search(channel):
        raise ValueError(f"channel must be non-empty without '/' or whitespace: {channel!r}")


def channel_prefix(prefix: str, channel: str) -> str:
    """``{prefix}/channel={channel}/`` (no leading slash when the prefix is empty)."""
    _check_channel(channel)
    base = prefix.strip("/")
    return f"{base}/channel={channel}/" if base else f"channel={channel}/"


def window_folder(prefix: str, channel: str, window: Window) -> str:
    """The folder holding a window's objects and marker, ending in ``/``."""
    t = _utc(window.start_ms)
    return (
        f"{channel_prefix(prefix, channel)}ingest_dt={t.year:04d}/{t.month:02d}/{t.day:02d}"
        f"/hour={t.hour:02d}/{part_folder(window)}/"
    )


def object_name(hostname: str, seq: int) -> str:
    """``{hostname}-seq=000001.ndjson`` (hostname made safe, seq ≥ 1)."""
    if seq < 1:
        raise ValueError(f"seq must be >= 1, got {seq}")
    return f"{safe_hostname(hostname)}-seq={seq:06d}.ndjson"


def object_key(prefix: str, channel: str, window: Window, hostname: str, seq: int) -> str:
    """The full S3 key of object ``seq`` of (channel, window), per SPEC §3."""
    return window_folder(prefix, channel, window) + object_name(hostname, seq)


def marker_key(prefix: str, channel: str, window: Window) -> str:
    """The ``uploading.marker`` key in the window's ``part=`` folder."""
    return window_folder(prefix, channel, window) + MARKER_NAME


def seq_from_key(key: str, hostname: str) -> int | None:
    """The seq of an object key written under ``hostname``, else ``None``.

    Lets the adapter seed ``SeqCounter`` from a listing of ``window_folder`` so that
    a restart inside a window does not overwrite ``seq=000001``.
    """
    name = key.rpartition("/")[2]
    head = f"{safe_hostname(hostname)}-seq="
    if not (name.startswith(head) and name.endswith(".ndjson")):
        return None
    digits = name[len(head) : -len(".ndjson")]
    if len(digits) < 6 or not digits.isascii() or not digits.isdigit():
        return None
    seq = int(digits)
    return seq if seq >= 1 else None


def max_multipart_bytes(part_size_bytes: int) -> int:
    """Largest object uploadable with parts of this size (10,000 parts, ≤ 5 TiB)."""
    return min(part_size_bytes * MAX_PARTS, MAX_OBJECT_BYTES_S3)


def effective_part_size(part_size_bytes: int, max_object_bytes: int) -> int:
    """The part size to use: at least 5 MiB and the configured size, and large
    enough that ``max_object_bytes`` fits in 10,000 parts; at most 5 GiB.

    Raises ``ValueError`` when no part size works (configured part above 5 GiB,
    object limit below 1 byte or above 5 TiB).
    """
    if part_size_bytes < 1:
        raise ValueError(f"part size must be positive, got {part_size_bytes}")
    if part_size_bytes > MAX_PART_BYTES:
        raise ValueError(f"part size {part_size_bytes} exceeds the S3 limit {MAX_PART_BYTES}")
    if not 1 <= max_object_bytes <= MAX_OBJECT_BYTES_S3:
        raise ValueError(
            f"max object size must be in 1..{MAX_OBJECT_BYTES_S3} bytes, got {max_object_bytes}"
        )
    needed = -(-max_object_bytes // MAX_PARTS)
    size = max(MIN_PART_BYTES, part_size_bytes, needed)
    if size > MAX_PART_BYTES:  # unreachable with the S3 limits above; kept as a guard
        raise ValueError(f"no part size fits {max_object_bytes} bytes in {MAX_PARTS} parts")
    return size


def plan_parts(object_size: int, part_size: int) -> list[int]:
    """Sizes of the parts an object is cut into: all ``part_size`` but the last.

    An empty object has no parts (``[]``): the adapter aborts such an upload.
    Raises ``ValueError`` for a part size outside 5 MiB..5 GiB, a negative size, or
    an object that would need more than 10,000 parts or exceed 5 TiB.
    """
    if not MIN_PART_BYTES <= part_size <= MAX_PART_BYTES:
        raise ValueError(f"part size must be in {MIN_PART_BYTES}..{MAX_PART_BYTES}")
    if object_size < 0:
        raise ValueError(f"object size must not be negative, got {object_size}")
    if object_size > max_multipart_bytes(part_size):
        raise ValueError(f"{object_size} bytes do not fit in {MAX_PARTS} parts of {part_size}")
    full, rest = divmod(object_size, part_size)
    return [part_size] * full + ([rest] if rest else [])


@dataclass(frozen=True, slots=True)
class RotationPolicy:
    """When to start a new object and when to cut a part.

    Build it with ``from_config`` to apply ``effective_part_size``; the constructor
    checks that the sizes are already consistent.
    """

    window_minutes: int
    max_object_bytes: int
    part_size_bytes: int

    def __post_init__(self) -> None:
        _check_window_minutes(self.window_minutes)
        if effective_part_size(self.part_size_bytes, self.max_object_bytes) != (
            self.part_size_bytes
        ):
            raise ValueError("part_size_bytes is not effective; use RotationPolicy.from_config")

    @classmethod
    def from_config(
        cls, window_minutes: int, max_object_bytes: int, part_size_bytes: int
    ) -> RotationPolicy:
        part = effective_part_size(part_size_bytes, max_object_bytes)
        return cls(window_minutes, max_object_bytes, part)

    def window_for(self, ingest_ms: int) -> Window:
        return window_for(ingest_ms, self.window_minutes)

    def should_rotate(self, object_bytes: int, line_bytes: int) -> bool:
        """True when the object is non-empty and the line would take it over the limit.

        Call before appending each line; on ``True`` complete the object and put the
        line in a new one (next seq, same window).
        """
        if object_bytes < 0 or line_bytes < 0:
            raise ValueError("sizes must not be negative")
        return object_bytes > 0 and object_bytes + line_bytes > self.max_object_bytes

    def part_ready(self, buffered_bytes: int) -> bool:
        """True when at least one full part is buffered: upload ``part_size_bytes``."""
        return buffered_bytes >= self.part_size_bytes


@dataclass(slots=True)
class SeqCounter:
    """Object numbers per (channel, window), from 1; only the newest window is kept.

    Memory is one entry per channel. A newer window restarts at 1; an older window
    raises ``ValueError``, since its count is forgotten and reusing a seq would
    overwrite an object.
    """

    _current: dict[str, tuple[int, int]] = field(default_factory=dict)

    def _last(self, channel: str, window: Window) -> int:
        entry = self._current.get(channel)
        if entry is None or entry[0] < window.start_ms:
            return 0
        if entry[0] > window.start_ms:
            raise ValueError(f"window {window} for {channel!r} is older than the current one")
        return entry[1]

    def next_seq(self, channel: str, window: Window) -> int:
        """Allocate the seq of the next object of (channel, window)."""
        seq = self._last(channel, window) + 1
        self._current[channel] = (window.start_ms, seq)
        return seq

    def seed(self, channel: str, window: Window, last_seq: int) -> None:
        """Record that seqs up to ``last_seq`` already exist (e.g. found by listing)."""
        if last_seq < 0:
            raise ValueError(f"last_seq must not be negative, got {last_seq}")
        seq = max(self._last(channel, window), last_seq)
        self._current[channel] = (window.start_ms, seq)
