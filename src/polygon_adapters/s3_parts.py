"""An archive object being filled: its parts, as ``S3MultipartArchive.append`` writes them.

:class:`ArchiveObject` is filled synchronously on the socket reader's side; every part
ends on a line end. :class:`~polygon_adapters.s3_objects.ObjectUploader` takes its cut
parts (and its tail copies, ``S3_MAX_UNUPLOADED_SEC``) to S3.
"""

from __future__ import annotations

import asyncio
import io
from collections import deque

from polygon_core.errors import ArchiveError
from polygon_core.events import Channel
from polygon_core.rotation import Window

__all__ = ["ArchiveObject", "Part"]


class Part:
    """A cut part: its number, bytes (the ``BytesIO`` it was filled in, sent as is), size,
    and how many line ends it holds. A tail copy (``S3_MAX_UNUPLOADED_SEC``) is one too,
    with its ``etag`` once S3 has it."""

    __slots__ = ("number", "data", "size", "lines", "etag")

    def __init__(self, number: int, data: io.BytesIO, size: int, lines: int) -> None:
        self.number = number
        self.data = data
        self.size = size
        self.lines = lines
        self.etag = ""


class ArchiveObject:
    """One object of one (channel, window): its part being filled, parts and upload state.

    Lines are written once, into the ``BytesIO`` of the part they fall in, which is then
    uploaded as it is (botocore and aiohttp read a ``BytesIO`` body without copying it
    whole first, as they would a ``bytes`` one); line ends are counted as lines come in,
    not by scanning parts.
    """

    __slots__ = (
        "channel", "window", "end_ms", "seq", "key", "marker", "opened_ms", "opened_s", "part",
        "filled", "part_lines", "size_bytes", "lines", "uploaded_bytes", "uploaded_lines",
        "ready", "next_part", "etags", "in_flight", "upload_id", "closing", "done", "error",
        "wake", "pending_s", "tail_copy", "tail_sending", "tail_sent",
    )  # fmt: skip

    def __init__(
        self,
        channel: Channel,
        window: Window,
        seq: int,
        key: str,
        marker: str,
        opened_ms: int,
        opened_s: float,
    ) -> None:
        self.channel = channel
        self.window = window
        self.end_ms = window.end_ms
        self.seq = seq
        self.key = key
        self.marker = marker
        self.opened_ms = opened_ms
        self.opened_s = opened_s
        self.part = io.BytesIO()
        self.filled = 0
        """Bytes in ``part`` (not yet cut)."""
        self.part_lines = 0
        """Line ends in ``part``."""
        self.size_bytes = 0
        self.lines = 0
        self.uploaded_bytes = 0
        self.uploaded_lines = 0
        self.ready: deque[Part] = deque()
        self.next_part = 1
        self.etags: dict[int, str] = {}
        self.in_flight = 0
        self.upload_id = ""
        self.closing = False
        self.done = False
        self.error: ArchiveError | None = None
        self.wake = asyncio.Event()
        self.pending_s: float | None = None
        """Monotonic time of the oldest line in ``part`` not in a tail copy (None: none)."""
        self.tail_copy: Part | None = None
        """A copy of the tail waiting to be sent (``S3_MAX_UNUPLOADED_SEC``)."""
        self.tail_sending = 0
        """The part number of the tail copy being uploaded (0: none)."""
        self.tail_sent: Part | None = None
        """The newest tail copy S3 holds."""

    def add(self, lines: bytes, count: int, part_size: int) -> None:
        """Write ``lines`` (``count`` line ends; they end with one) and cut a part at the
        first line end at or past ``part_size`` bytes, so every part holds whole lines and
        all but the last are at least ``part_size`` (S3's 5 MiB minimum)."""
        n = len(lines)
        room = part_size - self.filled
        if n < room:
            self.part.write(lines)
            self.filled += n
            self.part_lines += count
            return
        view = memoryview(lines)
        start = 0
        while n - start >= room:
            end = lines.find(b"\n", start + room - 1) + 1  # found: lines end with one
            head = lines.count(b"\n", start, end)
            self.part.write(view[start:end])
            self.filled += end - start
            self.part_lines += head
            count -= head
            self._cut()
            start = end
            room = part_size
        if start < n:
            self.part.write(view[start:])
            self.filled = n - start
            self.part_lines = count
        self.wake.set()

    def cut_tail(self) -> None:
        """Cut what is left as a part: the last one (it may be small) when the object is
        closing, else a time cut of at least 5 MiB (``DurabilityPolicy``)."""
        if self.filled:
            self._cut()
        self.wake.set()

    def copy_tail(self) -> None:
        """Queue a copy of the tail for upload under its part number (it replaces an older
        copy not yet sent)."""
        data = io.BytesIO(self.part.getvalue())
        self.tail_copy = Part(self.next_part, data, self.filled, self.part_lines)
        self.pending_s = None
        self.wake.set()

    @property
    def durable_lines(self) -> int:
        """Lines in uploaded parts, and in the newest tail copy S3 holds."""
        sent = self.tail_sent
        extra = sent.lines if sent is not None and sent.number not in self.etags else 0
        return self.uploaded_lines + extra

    def discard(self) -> None:
        """Drop the part being filled and the parts not yet uploading."""
        self.part = io.BytesIO()
        self.filled = self.part_lines = 0
        self.ready.clear()
        self.tail_copy = self.pending_s = None

    def _cut(self) -> None:
        self.ready.append(Part(self.next_part, self.part, self.filled, self.part_lines))
        self.next_part += 1
        self.part = io.BytesIO()
        self.filled = self.part_lines = 0
        self.pending_s = None
