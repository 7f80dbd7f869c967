"""Start-up recovery of the S3 archive: finish what a crashed writer left open.

1. ``ListMultipartUploads`` under each channel's prefix (paginated). For every ``.ndjson``
   upload, ``ListParts`` (paginated); complete it with the parts
   :func:`~polygon_core.archive_policy.completable_parts` allows, or abort it when there
   are none. Any writer's uploads are recovered, not only this hostname's: on ECS a new
   task has a new hostname. With ``others=False`` only this hostname's (with
   ``HA_ENABLED`` another writer may still be completing its objects: the predecessor of a
   handover; :func:`recover_others` finishes theirs later).
2. Delete stale ``uploading.marker`` objects: those in the folders of the uploads above
   and those found by listing the day folders of the last ``lookback_hours`` (the archive
   is never listed in full; older stale markers are harmless, empty and zero rows).
3. Seed the ``SeqCounter`` from the current window's folder per channel, so a restart
   inside a window continues after the highest ``seq`` of this hostname instead of
   overwriting ``seq=000001``.

Every call retries ``attempts`` times (``None``: without end, as the archive does when it
recovers in the background while lines buffer); then ``ArchiveError``. An answer that says
the configuration is wrong (no such bucket, access denied, bad credentials) raises
``ArchiveMisconfigured`` at once.

:func:`highest_seqs` lists other windows' folders the same way: objects opened while
recovery ran are numbered once it is done, after what their folders already hold.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from polygon_adapters.s3_upload import S3Requests
from polygon_core.archive_policy import UploadedPart, completable_parts, lookback_folders
from polygon_core.events import Channel
from polygon_core.rotation import (
    MARKER_NAME,
    RotationPolicy,
    SeqCounter,
    Window,
    channel_prefix,
    seq_from_key,
    window_folder,
)

__all__ = ["RecoveryReport", "highest_seqs", "recover_archive", "recover_others"]

logger = logging.getLogger("polygon_adapters.s3_archive")

_T = TypeVar("_T")


@dataclass(slots=True)
class RecoveryReport:
    """What :func:`recover_archive` did."""

    completed: list[str] = field(default_factory=list)
    """Keys of uploads completed with their uploaded parts."""
    aborted: list[str] = field(default_factory=list)
    """Keys of uploads aborted (no part to complete)."""
    markers_removed: list[str] = field(default_factory=list)
    seeded: dict[Channel, int] = field(default_factory=dict)
    """Highest existing seq of this hostname in the current window, per channel."""
    window: Window | None = None
    """The window ``seeded`` is about (the one of ``now_ms``)."""

    def absorb(self, other: RecoveryReport) -> None:
        """Add ``other``'s completed and aborted uploads (one channel's) to this report."""
        self.completed += other.completed
        self.aborted += other.aborted


@dataclass(frozen=True, slots=True)
class _Target:
    client: Any
    bucket: str
    requests: S3Requests
    attempts: int | None

    async def call(self, what: str, method: str, **params: Any) -> dict[str, Any]:
        request = partial(getattr(self.client, method), Bucket=self.bucket, **params)
        result: dict[str, Any] = await self.requests.call(
            what, request, attempts=self.attempts, config_fatal=True
        )
        return result


async def recover_archive(
    client: Any,
    bucket: str,
    prefix: str,
    hostname: str,
    policy: RotationPolicy,
    seq: SeqCounter,
    requests: S3Requests,
    *,
    now_ms: int,
    attempts: int | None,
    lookback_hours: int = 48,
    others: bool = True,
) -> RecoveryReport:
    """Run the three steps of the module docstring; see :class:`RecoveryReport`. With
    ``others=False``, step 1 finishes only this hostname's uploads and step 2 removes only
    the markers of their folders.

    The channels are recovered concurrently (each one's listings in order), so the time
    S3 needs to answer is that of the busiest channel, not of all four one after another;
    the report lists them in channel order. If one channel fails, the others are
    cancelled and its error is raised.
    """
    target = _Target(client, bucket, requests, attempts)
    window = policy.window_for(now_ms)
    found = await _each(
        _recover_channel(target, prefix, hostname, c, window, now_ms, lookback_hours, others)
        for c in Channel
    )
    report = RecoveryReport(window=window)
    markers: set[str] = set()
    for channel, (sub, channel_markers, highest) in zip(Channel, found, strict=True):
        report.absorb(sub)
        markers |= channel_markers
        seq.seed(channel, window, highest)
        report.seeded[channel] = highest
    for marker in sorted(markers):
        await target.call("DeleteObject (stale marker)", "delete_object", Key=marker)
        report.markers_removed.append(marker)
        logger.info("recovery: removed stale marker %s", marker)
    return report


async def _recover_channel(
    target: _Target,
    prefix: str,
    hostname: str,
    channel: Channel,
    window: Window,
    now_ms: int,
    lookback_hours: int,
    others: bool,
) -> tuple[RecoveryReport, set[str], int]:
    """Steps 1 and 3 for one channel, and the stale markers step 2 is to delete."""
    mine = None if others else partial(_written_by, hostname=hostname, wanted=True)
    report = await _finish_uploads(target, prefix, channel, mine)
    markers = {
        key.rpartition("/")[0] + "/" + MARKER_NAME for key in report.completed + report.aborted
    }
    if others:
        for folder in lookback_folders(prefix, channel.value, now_ms, lookback_hours):
            async for key in _keys(target, folder):
                if key.endswith("/" + MARKER_NAME):
                    markers.add(key)
    return report, markers, await _highest(target, prefix, hostname, channel, window)


async def recover_others(
    client: Any, bucket: str, prefix: str, hostname: str, requests: S3Requests
) -> RecoveryReport:
    """Step 1 for the uploads of every writer but ``hostname`` (retrying without end; the
    channels concurrently). Their folders' markers stay: this writer may have objects open
    in the same folders (the one marker per folder is rewritten and removed with those)."""
    target = _Target(client, bucket, requests, None)
    theirs = partial(_written_by, hostname=hostname, wanted=False)
    report = RecoveryReport()
    for sub in await _each(_finish_uploads(target, prefix, c, theirs) for c in Channel):
        report.absorb(sub)
    return report


def _written_by(key: str, *, hostname: str, wanted: bool) -> bool:
    return (seq_from_key(key, hostname) is not None) is wanted


async def _finish_uploads(
    target: _Target, prefix: str, channel: Channel, keep: Callable[[str], bool] | None
) -> RecoveryReport:
    """Finish the channel's open ``.ndjson`` uploads ``keep`` selects (all: ``None``)."""
    report = RecoveryReport()
    async for key, upload_id in _uploads(target, channel_prefix(prefix, channel)):
        if key.endswith(".ndjson") and (keep is None or keep(key)):
            await _finish(target, key, upload_id, report)
    return report


async def _each(coros: Iterable[Coroutine[Any, Any, _T]]) -> list[_T]:
    """Run ``coros`` concurrently; their results in order. The first error cancels the
    rest (awaited, so no task is left running or unretrieved) and is raised."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if not task.cancelled() and (exc := task.exception()) is not None:
                raise exc
        return [task.result() for task in tasks]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def highest_seqs(
    client: Any,
    bucket: str,
    prefix: str,
    hostname: str,
    requests: S3Requests,
    folders: set[tuple[Channel, Window]],
) -> dict[tuple[Channel, Window], int]:
    """The highest seq of ``hostname`` in each (channel, window) folder (0: none), retrying
    without end."""
    target = _Target(client, bucket, requests, None)
    return {
        (channel, window): await _highest(target, prefix, hostname, channel, window)
        for channel, window in sorted(folders, key=lambda f: (f[0].value, f[1].start_ms))
    }


async def _highest(
    target: _Target, prefix: str, hostname: str, channel: Channel, window: Window
) -> int:
    highest = 0
    async for key in _keys(target, window_folder(prefix, channel, window)):
        found = seq_from_key(key, hostname)
        if found is not None and found > highest:
            highest = found
    return highest


async def _finish(target: _Target, key: str, upload_id: str, report: RecoveryReport) -> None:
    parts = [p async for p in _parts(target, key, upload_id)]
    chosen = completable_parts(parts)
    if not chosen:
        await target.call(
            "AbortMultipartUpload (recovery)", "abort_multipart_upload", Key=key, UploadId=upload_id
        )
        report.aborted.append(key)
        logger.warning("recovery: aborted upload of %s (%d parts, none usable)", key, len(parts))
        return
    await target.call(
        "CompleteMultipartUpload (recovery)",
        "complete_multipart_upload",
        Key=key,
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": p.number, "ETag": p.etag} for p in chosen]},
    )
    report.completed.append(key)
    logger.warning(
        "recovery: completed %s with %d of %d uploaded parts (%d bytes)",
        key,
        len(chosen),
        len(parts),
        sum(p.size for p in chosen),
    )


async def _uploads(target: _Target, prefix: str) -> AsyncIterator[tuple[str, str]]:
    params: dict[str, Any] = {"Prefix": prefix}
    while True:
        page = await target.call("ListMultipartUploads", "list_multipart_uploads", **params)
        for upload in page.get("Uploads", []):
            yield upload["Key"], upload["UploadId"]
        if not page.get("IsTruncated"):
            return
        params["KeyMarker"] = page.get("NextKeyMarker", "")
        params["UploadIdMarker"] = page.get("NextUploadIdMarker", "")


async def _parts(target: _Target, key: str, upload_id: str) -> AsyncIterator[UploadedPart]:
    params: dict[str, Any] = {"Key": key, "UploadId": upload_id}
    while True:
        page = await target.call("ListParts", "list_parts", **params)
        for part in page.get("Parts", []):
            yield UploadedPart(int(part["PartNumber"]), str(part["ETag"]), int(part["Size"]))
        if not page.get("IsTruncated"):
            return
        params["PartNumberMarker"] = page["NextPartNumberMarker"]


async def _keys(target: _Target, prefix: str) -> AsyncIterator[str]:
    params: dict[str, Any] = {"Prefix": prefix}
    while True:
        page = await target.call("ListObjectsV2", "list_objects_v2", **params)
        for obj in page.get("Contents", []):
            yield obj["Key"]
        if not page.get("IsTruncated"):
            return
        params["ContinuationToken"] = page["NextContinuationToken"]
