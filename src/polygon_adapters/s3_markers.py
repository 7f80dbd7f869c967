"""``uploading.marker``: one empty object per ``part=`` folder while uploads in it are open.

Several uploads can be open in one folder at once (the object being completed after a size
rotation and its successor, ``seq`` n and n+1). There is still one marker per folder; its
S3 user metadata describes the newest open upload and how many are open:

==================  ==========================================================
``object-key``      key of the newest open upload in the folder (URL-quoted)
``upload-id``       its multipart upload id (URL-quoted)
``started-at``      when it was opened, ISO-8601 UTC ms (``2025-05-07T10:00:00.123Z``)
``open-uploads``    number of open uploads of this writer in the folder
``hostname``        the writer
==================  ==========================================================

The marker is rewritten when the set changes and deleted when the last upload in the
folder completes or aborts. Writes for one folder are serialised, so the marker in S3
always converges to the bookkeeping. Recovery does not depend on the metadata
(``ListMultipartUploads`` is authoritative); it is there for operators and other readers.
The body is empty, so Athena reads the marker as zero rows.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import quote

from polygon_adapters.s3_upload import S3Requests
from polygon_core.errors import ArchiveError
from polygon_core.timestamps import iso_ms

__all__ = ["FolderMarkers", "marker_metadata"]

logger = logging.getLogger("polygon_adapters.s3_archive")


def marker_metadata(
    object_key: str, upload_id: str, started_ms: int, open_uploads: int, hostname: str
) -> dict[str, str]:
    """The marker's user metadata (ASCII only: keys and ids are URL-quoted)."""
    return {
        "object-key": quote(object_key, safe="/=-_.:+"),
        "upload-id": quote(upload_id, safe="-_.~"),
        "started-at": iso_ms(started_ms),
        "open-uploads": str(open_uploads),
        "hostname": quote(hostname, safe="-_.~"),
    }


@dataclass(slots=True)
class _Folder:
    open: dict[str, tuple[str, int]] = field(default_factory=dict)
    """object key -> (upload id, opened at ms), in opening order."""
    written: dict[str, str] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class FolderMarkers:
    """Keeps one marker per folder in step with the uploads open in it."""

    def __init__(
        self, client: Any, bucket: str, hostname: str, requests: S3Requests, *, enabled: bool
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._hostname = hostname
        self._requests = requests
        self.enabled = enabled
        self._folders: dict[str, _Folder] = {}

    async def opened(self, marker: str, object_key: str, upload_id: str, started_ms: int) -> None:
        if not self.enabled:
            return
        folder = self._folders.setdefault(marker, _Folder())
        folder.open[object_key] = (upload_id, started_ms)
        await self._sync(marker, folder)

    async def closed(self, marker: str, object_key: str) -> None:
        if not self.enabled:
            return
        folder = self._folders.get(marker)
        if folder is None:
            return
        folder.open.pop(object_key, None)
        await self._sync(marker, folder)

    async def _sync(self, marker: str, folder: _Folder) -> None:
        async with folder.lock:
            if folder.open:
                key, (upload_id, started_ms) = next(reversed(folder.open.items()))
                wanted = marker_metadata(
                    key, upload_id, started_ms, len(folder.open), self._hostname
                )
                if wanted != folder.written:
                    await self._requests.call(
                        "PutObject (marker)",
                        partial(
                            self._client.put_object,
                            Bucket=self._bucket,
                            Key=marker,
                            Body=b"",
                            ContentType="application/octet-stream",
                            Metadata=wanted,
                        ),
                    )
                    folder.written = wanted
                    logger.debug("marker %s: %d open upload(s)", marker, len(folder.open))
            elif folder.written is not None:
                try:
                    await self._requests.call(
                        "DeleteObject (marker)",
                        partial(self._client.delete_object, Bucket=self._bucket, Key=marker),
                    )
                except ArchiveError as exc:  # permanent: leave it to start-up recovery
                    logger.error("could not delete marker %s: %s", marker, exc)
                folder.written = None
                logger.debug("marker %s deleted", marker)
            if not folder.open and folder.written is None:
                self._folders.pop(marker, None)
