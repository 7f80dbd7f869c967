"""One archive object's way to S3: create the upload, upload its parts, complete it.

:class:`ArchiveObject` is filled synchronously by ``S3MultipartArchive.append``;
:meth:`ObjectUploader.drive` runs as one task per object. Parts of all objects share one
semaphore (``upload_concurrency`` part uploads in flight); parts of one object may upload
concurrently and are completed in part-number order. Memory is accounted in
``ArchiveStats.bytes_buffered``: a part's bytes leave it when the part is uploaded.

When S3 refuses an object for good (its upload vanished, e.g. aborted by a lifecycle
rule), the object is logged as LOST, counted in ``objects_failed``/``lost_lines``, and its
upload aborted. When the task is cancelled (shutdown deadline), the object is counted in
``objects_abandoned``: its uploaded parts stay in S3 for the next start's recovery.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

from polygon_adapters.s3_markers import FolderMarkers
from polygon_adapters.s3_stats import ArchiveStats
from polygon_adapters.s3_upload import CONTENT_TYPE, S3Requests, error_code
from polygon_core.errors import ArchiveError
from polygon_core.events import Channel
from polygon_core.ports import Clock
from polygon_core.rotation import Window

__all__ = ["ArchiveObject", "ObjectUploader", "Part"]

logger = logging.getLogger("polygon_adapters.s3_archive")


class Part:
    """A cut part: its number, bytes (the ``BytesIO`` it was filled in, sent as is), size,
    and how many line ends it holds."""

    __slots__ = ("number", "data", "size", "lines")

    def __init__(self, number: int, data: io.BytesIO, size: int, lines: int) -> None:
        self.number = number
        self.data = data
        self.size = size
        self.lines = lines


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
        "wake",
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

    def finish(self) -> None:
        """Cut what is left as the last part (it may be small)."""
        if self.filled:
            self._cut()
        self.wake.set()

    def discard(self) -> None:
        """Drop the part being filled and the parts not yet uploading."""
        self.part = io.BytesIO()
        self.filled = self.part_lines = 0
        self.ready.clear()

    def _cut(self) -> None:
        self.ready.append(Part(self.next_part, self.part, self.filled, self.part_lines))
        self.next_part += 1
        self.part = io.BytesIO()
        self.filled = self.part_lines = 0


class ObjectUploader:
    """Drives objects to completion against one bucket (see the module docstring).

    ``detach(obj)`` is called when an object fails or is cut off, so no more lines go in.
    """

    def __init__(
        self,
        client: Any,
        bucket: str,
        requests: S3Requests,
        markers: FolderMarkers,
        stats: ArchiveStats,
        clock: Clock,
        *,
        upload_concurrency: int,
        detach: Callable[[ArchiveObject], None],
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._requests = requests
        self._markers = markers
        self._stats = stats
        self._clock = clock
        self._slots = asyncio.Semaphore(upload_concurrency)
        self._detach = detach

    async def drive(self, obj: ArchiveObject) -> None:
        """Create the upload, upload parts as they come, complete after the last one."""
        pending: set[asyncio.Task[None]] = set()
        error: ArchiveError | None = None
        try:
            created = await self._call(
                "CreateMultipartUpload", "create_multipart_upload", obj, ContentType=CONTENT_TYPE
            )
            obj.upload_id = str(created["UploadId"])
            await self._markers.opened(obj.marker, obj.key, obj.upload_id, obj.opened_ms)
            while True:
                while obj.ready and obj.error is None:
                    await self._slots.acquire()
                    obj.in_flight += 1
                    task = asyncio.create_task(self._upload_part(obj, obj.ready.popleft()))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                if obj.error is not None:
                    raise obj.error
                if obj.closing and not obj.ready and not obj.in_flight:
                    break
                obj.wake.clear()
                await obj.wake.wait()
            await self._complete(obj)
        except ArchiveError as exc:
            error = exc
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            self._stats.open_uploads -= 1
            if not obj.done:
                self._lose(obj, failed=error is not None)
        if error is not None:
            await self._give_up(obj, error)

    async def _call(
        self, what: str, method: str, obj: ArchiveObject, attempts: int | None = None, **params: Any
    ) -> dict[str, Any]:
        request = partial(getattr(self._client, method), Bucket=self._bucket, Key=obj.key, **params)
        result: dict[str, Any] = await self._requests.call(what, request, attempts=attempts)
        return result

    async def _upload_part(self, obj: ArchiveObject, part: Part) -> None:
        upload = partial(
            self._client.upload_part,
            Bucket=self._bucket,
            Key=obj.key,
            UploadId=obj.upload_id,
            PartNumber=part.number,
            Body=part.data,
        )

        async def attempt() -> dict[str, Any]:
            part.data.seek(0)  # every attempt sends the part from its start
            answer: dict[str, Any] = await upload()
            return answer

        try:
            answer = await self._requests.call("UploadPart", attempt)
        except ArchiveError as exc:
            obj.error = exc
            return
        finally:
            obj.in_flight -= 1
            self._slots.release()
            obj.wake.set()
        size = part.size
        obj.etags[part.number] = str(answer["ETag"])
        obj.uploaded_bytes += size
        obj.uploaded_lines += part.lines
        stats = self._stats
        stats.bytes_buffered -= size
        stats.lines_buffered -= part.lines
        stats.parts_uploaded += 1
        stats.bytes_uploaded += size
        logger.debug("S3 archive: %s part %d uploaded (%d bytes)", obj.key, part.number, size)

    async def _complete(self, obj: ArchiveObject) -> None:
        parts = [{"PartNumber": n, "ETag": obj.etags[n]} for n in sorted(obj.etags)]
        try:
            await self._call(
                "CompleteMultipartUpload",
                "complete_multipart_upload",
                obj,
                UploadId=obj.upload_id,
                MultipartUpload={"Parts": parts},
            )
        except ArchiveError as exc:
            # A retried completion whose first attempt did succeed answers NoSuchUpload.
            if error_code(exc.__cause__ or exc) != "NoSuchUpload" or not await self._exists(obj):
                raise
        obj.done = True
        self._stats.objects_completed += 1
        await self._markers.closed(obj.marker, obj.key)
        logger.info(
            "S3 archive: completed %s (%d bytes, %d lines, %d parts, %.1f s)",
            obj.key,
            obj.size_bytes,
            obj.lines,
            len(parts),
            self._clock.monotonic_s() - obj.opened_s,
        )

    async def _exists(self, obj: ArchiveObject) -> bool:
        try:
            head = await self._call("HeadObject", "head_object", obj, attempts=3)
        except ArchiveError:
            return False
        return int(head.get("ContentLength", -1)) == obj.size_bytes

    def _lose(self, obj: ArchiveObject, *, failed: bool) -> None:
        """Account for an object that will not be completed (failed, or cut off)."""
        self._detach(obj)
        obj.closing = True
        held = obj.size_bytes - obj.uploaded_bytes
        stats = self._stats
        stats.bytes_buffered -= held
        stats.lines_buffered -= obj.lines - obj.uploaded_lines
        if failed:  # nothing of it will be readable
            stats.objects_failed += 1
            stats.lost_lines += obj.lines
            stats.lost_bytes += obj.size_bytes
        else:  # its uploaded parts are completed by the next start's recovery
            stats.objects_abandoned += 1
            stats.lost_lines += obj.lines - obj.uploaded_lines
            stats.lost_bytes += held
        obj.discard()

    async def _give_up(self, obj: ArchiveObject, error: ArchiveError) -> None:
        logger.error(
            "S3 archive: LOST object %s (%d lines, %d bytes): %s",
            obj.key,
            obj.lines,
            obj.size_bytes,
            error,
        )
        if not obj.upload_id:
            return
        try:
            await self._call(
                "AbortMultipartUpload",
                "abort_multipart_upload",
                obj,
                attempts=3,
                UploadId=obj.upload_id,
            )
        except ArchiveError as exc:
            logger.warning("S3 archive: abort of %s failed: %s", obj.key, exc)
        await self._markers.closed(obj.marker, obj.key)
