"""Pure rules of the S3 archive that ``rotation.py`` leaves to the adapter.

* Which uploaded parts of an upload left open by a crash can be completed
  (:func:`completable_parts`).
* Which day folders start-up recovery lists to find stale markers (:func:`lookback_folders`).

Crash recovery
    Parts of one object are uploaded concurrently, so after a crash any subset of them may
    be in S3. Every part ends on a line end (the adapter cuts at the first line end past
    ``part_size_bytes``), so any run of parts holds whole lines; still only the run of
    parts ``1, 2, ..., k`` without a gap is completed, so a recovered object is a prefix of
    what was written, in order, with nothing missing in its middle; parts after a gap are
    discarded (S3 deletes the parts a completion does not name). The run also stops after
    the first part smaller than 5 MiB (only the last part may be that small). If part 1 is
    missing nothing can be completed and the upload is aborted.

No I/O, no clock: time comes in as epoch milliseconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from polygon_core.rotation import MIN_PART_BYTES, channel_prefix

__all__ = ["UploadedPart", "completable_parts", "day_folder", "lookback_folders"]

_DAY_MS = 86_400_000
_HOUR_MS = 3_600_000


class UploadedPart:
    """One part as ``ListParts`` reports it."""

    __slots__ = ("number", "etag", "size")

    def __init__(self, number: int, etag: str, size: int) -> None:
        self.number = number
        self.etag = etag
        self.size = size

    def __repr__(self) -> str:
        return f"UploadedPart({self.number}, {self.etag!r}, {self.size})"


def completable_parts(parts: Iterable[UploadedPart]) -> list[UploadedPart]:
    """The parts to name in ``CompleteMultipartUpload`` for an upload found after a crash:
    ``1..k`` without a gap, ending at the first part under 5 MiB. Empty: abort instead."""
    by_number = {p.number: p for p in parts}
    chosen: list[UploadedPart] = []
    number = 1
    while number in by_number:
        part = by_number[number]
        chosen.append(part)
        if part.size < MIN_PART_BYTES:
            break
        number += 1
    return chosen


def day_folder(prefix: str, channel: str, day_ms: int) -> str:
    """``{prefix}/channel={ch}/ingest_dt=YYYY/MM/DD/`` for the UTC day holding ``day_ms``."""
    t = time.gmtime(day_ms // 1000)
    day = f"{t.tm_year:04d}/{t.tm_mon:02d}/{t.tm_mday:02d}"
    return f"{channel_prefix(prefix, channel)}ingest_dt={day}/"


def lookback_folders(prefix: str, channel: str, now_ms: int, lookback_hours: int) -> list[str]:
    """The day folders of ``channel`` that overlap the last ``lookback_hours`` (oldest first)."""
    if lookback_hours < 0:
        raise ValueError(f"lookback_hours must not be negative, got {lookback_hours}")
    first = (now_ms - lookback_hours * _HOUR_MS) // _DAY_MS
    last = now_ms // _DAY_MS
    return [day_folder(prefix, channel, day * _DAY_MS) for day in range(first, last + 1)]
