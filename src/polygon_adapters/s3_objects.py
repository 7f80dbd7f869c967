"""One archive object's way to S3: create the upload, upload its parts, complete it.

:class:`~polygon_adapters.s3_parts.ArchiveObject` is filled by ``S3MultipartArchive.append``;
:meth:`ObjectUploader.drive` runs as one task per object. Parts of all objects share one
semaphore (``upload_concurrency`` part uploads in flight); parts of one object may upload
concurrently and are completed in part-number order. Memory is accounted in
``ArchiveStats.bytes_buffered``: a part's bytes leave it when the part is uploaded.

Tail copies (``S3_MAX_UNUPLOADED_SEC``, see ``polygon_core.durability``): a quiet object's
part being filled is sent, as a copy, under the part number it will keep; S3 keeps the
last upload of a part number. So that the real part is that last upload, it waits while a
copy of its number is in flight, and a queued copy whose part has been cut since is
dropped. A real part equal to the newest copy S3 holds (nothing added since) is not sent
again: the copy's ETag completes the object. Copies take an upload slot; they are not
counted in ``bytes_buffered`` (each is under 5 MiB, one per channel at a time).

When S3 refuses an object for good (its upload vanished, e.g. aborted by a lifecycle
rule), the object is logged as LOST, counted in ``objects_failed``/``lost_lines``, and its
upload aborted. When the task is cancelled (shutdown deadline), the object is counted in
``objects_abandoned``: its uploaded parts stay in S3 for the next start's recovery.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from polygon_adapters.s3_markers import FolderMarkers
from polygon_adapters.s3_parts import ArchiveObject, Part
from polygon_adapters.s3_stats import ArchiveStats
from polygon_adapters.s3_upload import CONTENT_TYPE, S3Requests, error_code
from polygon_core.errors import ArchiveError
from polygon_core.ports import Clock

__all__ = ["ObjectUploader"]

logger = logging.getLogger("polygon_adapters.s3_archive")


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
                    part = obj.ready[0]
                    if part.number == obj.tail_sending:
                        break  # its copy is on the way: S3 must keep this, the later upload
                    obj.ready.popleft()
                    sent = obj.tail_sent
                    if sent is not None and sent.number == part.number and sent.size == part.size:
                        self._uploaded(obj, part, sent.etag)  # unchanged since its copy
                        continue
                    await self._slots.acquire()
                    self._spawn(pending, obj, part)
                copy = obj.tail_copy
                if copy is not None and not obj.tail_sending and obj.error is None:
                    obj.tail_copy = None
                    if copy.number == obj.next_part:  # else its part has been cut since
                        await self._slots.acquire()
                        obj.tail_sending = copy.number
                        self._spawn(pending, obj, copy, copy=True)
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

    def _spawn(
        self, pending: set[asyncio.Task[None]], obj: ArchiveObject, part: Part, copy: bool = False
    ) -> None:
        """Upload ``part`` (or a tail copy) in a task; a slot is already held."""
        obj.in_flight += 1
        task = asyncio.create_task(self._upload_part(obj, part, copy))
        pending.add(task)
        task.add_done_callback(pending.discard)

    async def _upload_part(self, obj: ArchiveObject, part: Part, copy: bool) -> None:
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
            if copy:
                obj.tail_sending = 0
            self._slots.release()
            obj.wake.set()
        etag = str(answer["ETag"])
        if not copy:
            self._uploaded(obj, part, etag)
            return
        sent = Part(part.number, io.BytesIO(), part.size, part.lines)  # the copy's bytes go
        sent.etag = etag
        obj.tail_sent = sent
        self._stats.tail_copies_uploaded += 1
        self._stats.tail_copy_bytes += part.size
        logger.debug("S3 archive: %s tail copy %d sent (%d bytes)", obj.key, part.number, part.size)

    def _uploaded(self, obj: ArchiveObject, part: Part, etag: str) -> None:
        size = part.size
        obj.etags[part.number] = etag
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
            stats.lost_lines += obj.lines - obj.durable_lines
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
