"""``RawArchive`` on S3: NDJSON objects written as multipart uploads (SPEC §3).

``append`` runs on the socket reader. It only files the line into its channel's open
object (opened lazily, on the first line), rotates the object when the window changed or
the line would take it over ``S3_MAX_OBJECT_BYTES``, and cuts a part at the first line end
at or past the effective part size (every part holds whole lines, all but the last at
least the part size; the last part of an object takes the rest). It never awaits and never
blocks.

The background work runs in :meth:`S3MultipartArchive.run` (or :meth:`start`): a supervisor
that rotates objects at their window's end even when no line arrives, and one task per
object that creates the upload (and the folder's ``uploading.marker``), uploads its parts
with at most ``upload_concurrency`` part uploads in flight over all objects, completes it
with the parts in order, and updates the marker.

Memory: every appended byte counts against ``max_buffer_bytes`` (``S3_MAX_BUFFER_BYTES``,
default 512 MiB) until the part holding it is uploaded. While S3 is slow or unreachable,
calls are retried with backoff and lines keep buffering; past the budget, ``append`` drops
new lines, counts them per channel and logs one ERROR line when dropping starts and one
summary when it has stopped. Budget 512 MiB vs. steady state: 4 channels x part size
(16 MiB) being filled + ``upload_concurrency`` x 16 MiB in flight = 128 MiB; the rest is
outage headroom (about 40 s at 50,000 events/s, ~9 MB/s of NDJSON).

Start-up: :meth:`run` first recovers what an earlier writer left open (``s3_recovery``,
``s3_startup``) in the background, retrying without end while lines buffer within the
budget, so an unreachable S3 never holds the hot path up. Objects opened meanwhile are
numbered (their ``seq``) and uploaded once recovery is done. An answer that says the
configuration is wrong (no such bucket, access denied, bad credentials) ends :meth:`run`
with ``ArchiveMisconfigured``. ``stats.recovering`` and ``stats.in_outage`` say the archive
is degraded.

Orderly stop (:meth:`aclose`): every open object is completed, the markers deleted, within
``close_timeout_s`` (default 90 s; see docs/athena.md for how this fits ECS's
``stopTimeout``). What is still open at the deadline is left for the next start's
:meth:`recover`, which completes uploads with their parts, aborts those with none, removes
stale markers and seeds ``seq``.

Crash loss bound: what was in memory and not yet in an uploaded part, i.e. per channel up to
one part size of the open object's buffer, plus the parts queued or in flight, all capped by
``max_buffer_bytes`` (at defaults: typically under 4 x 16 MiB + 4 x 16 MiB, at most 512 MiB).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

from polygon_adapters.s3_markers import FolderMarkers
from polygon_adapters.s3_objects import ArchiveObject, ObjectUploader
from polygon_adapters.s3_recovery import RecoveryReport
from polygon_adapters.s3_startup import StartupRecovery
from polygon_adapters.s3_stats import AppendCounts, ArchiveStats, DropLog
from polygon_adapters.s3_upload import S3Requests, S3RetryPolicy, open_s3_client
from polygon_core.events import Channel
from polygon_core.ports import Clock
from polygon_core.rotation import RotationPolicy, SeqCounter, Window, marker_key, object_key

__all__ = [
    "DEFAULT_CLOSE_TIMEOUT_S",
    "DEFAULT_MAX_BUFFER_BYTES",
    "ArchiveStats",
    "RecoveryReport",
    "S3MultipartArchive",
    "S3RetryPolicy",
    "open_s3_client",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_BUFFER_BYTES = 512 * 1024 * 1024
DEFAULT_CLOSE_TIMEOUT_S = 90.0


class _Lane(AppendCounts):
    """One channel on the append path: its open object and its totals (one dict lookup)."""

    __slots__ = ("obj",)

    def __init__(self) -> None:
        super().__init__()
        self.obj: ArchiveObject | None = None


class S3MultipartArchive:
    """The S3 ``RawArchive``. Run :meth:`run` as a task (or :meth:`start`), append, and
    :meth:`aclose` on the way out; :meth:`recover` before :meth:`run` recovers in the
    foreground instead (and raises when S3 cannot be reached).

    ``client`` is an aiobotocore S3 client (see :func:`~polygon_adapters.s3_upload.
    open_s3_client`); the caller owns it and closes it after :meth:`aclose`.
    """

    def __init__(
        self,
        client: Any,
        *,
        bucket: str,
        prefix: str,
        hostname: str,
        policy: RotationPolicy,
        clock: Clock,
        use_marker: bool = True,
        max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES,
        upload_concurrency: int = 4,
        retry: S3RetryPolicy | None = None,
        close_timeout_s: float = DEFAULT_CLOSE_TIMEOUT_S,
        tick_s: float = 1.0,
        drop_quiet_s: float = 10.0,
        recovery_lookback_hours: int = 48,
        recover_others_after_s: float | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        smallest = min(policy.part_size_bytes, policy.max_object_bytes)
        if max_buffer_bytes < smallest:
            raise ValueError(
                f"max_buffer_bytes {max_buffer_bytes} is below one part/object "
                f"({smallest} bytes): nothing could ever be uploaded"
            )
        if upload_concurrency < 1 or close_timeout_s <= 0 or tick_s <= 0:
            raise ValueError("upload_concurrency must be >= 1, timeouts and tick positive")
        if not bucket:
            raise ValueError("bucket must not be empty")
        self._client = client
        self._bucket = bucket
        self._prefix = prefix.strip("/")
        self._hostname = hostname
        self._policy = policy
        self._clock = clock
        self._limit = max_buffer_bytes
        self._max_object = policy.max_object_bytes
        self._part_size = policy.part_size_bytes
        self._retry = retry or S3RetryPolicy()
        self._close_timeout_s = close_timeout_s
        self._tick_s = tick_s
        self._lanes = {c: _Lane() for c in Channel}
        self.stats = ArchiveStats(appended=self._lanes)
        self._drops = DropLog(self.stats, max_buffer_bytes, drop_quiet_s)
        self._requests = S3Requests(self._retry, on_retry=self._on_retry, rng=rng)
        self._markers = FolderMarkers(client, bucket, hostname, self._requests, enabled=use_marker)
        self._uploader = ObjectUploader(
            client,
            bucket,
            self._requests,
            self._markers,
            self.stats,
            clock,
            upload_concurrency=upload_concurrency,
            detach=self._detach,
        )
        self._seq = SeqCounter()
        self._last_window: dict[Channel, Window] = {}
        self._starting: list[ArchiveObject] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._startup = StartupRecovery(
            client,
            bucket,
            self._prefix,
            hostname,
            policy,
            clock,
            self._requests,
            self.stats,
            seq=self._seq,
            last_window=self._last_window,
            pending=self._starting,
            name=self._name,
            wake=self._wake,
            lookback_hours=recovery_lookback_hours,
            others_after_s=recover_others_after_s,
        )
        self._running = False
        self._closing = False
        self._closed = False

    # -- the socket reader's side: synchronous, no I/O --------------------------------------

    def append(self, channel: Channel, lines: bytes, ingest_ms: int, count: int = 1) -> None:
        """File ``count`` NDJSON lines of one channel (a final newline is added if missing).
        Never awaits or blocks."""
        line = lines if lines.endswith(b"\n") else lines + b"\n"
        n = len(line)
        stats = self.stats
        buffered = stats.bytes_buffered + n
        if buffered > self._limit:  # the budget; -1 once closing
            self._refuse(channel, n, count)
            return
        lane = self._lanes[channel]
        obj = lane.obj
        if count > 1 and (obj is None or obj.size_bytes + n > self._max_object):
            # Rotation may fall between these lines: file them one by one (rare path).
            for one in line.splitlines(keepends=True):
                self.append(channel, one, ingest_ms)
            return
        if (
            obj is None
            or ingest_ms >= obj.end_ms
            or (obj.size_bytes + n > self._max_object and obj.size_bytes)  # should_rotate
        ):
            obj = self._roll(lane, channel, obj, ingest_ms)
        obj.add(line, count, self._part_size)
        obj.size_bytes += n
        obj.lines += count
        lane.lines += count
        lane.bytes += n
        stats.bytes_buffered = buffered
        stats.lines_buffered += count

    def _refuse(self, channel: Channel, n: int, count: int) -> None:
        why = "appended after close" if self._closing else "memory budget full"
        held = self.stats.bytes_buffered
        self._drops.dropped(channel, n, self._clock.monotonic_s(), held, why, lines=count)

    def _roll(
        self, lane: _Lane, channel: Channel, obj: ArchiveObject | None, ingest_ms: int
    ) -> ArchiveObject:
        window = self._policy.window_for(ingest_ms)
        if obj is not None:
            self._close(obj)
            if ingest_ms < obj.window.end_ms:  # size rotation (or the clock stepped back)
                window = obj.window
        last = self._last_window.get(channel)
        if last is not None and last.start_ms > window.start_ms:
            window = last  # windows never go back
        marker = marker_key(self._prefix, channel, window)
        clock = self._clock
        new = ArchiveObject(channel, window, 0, "", marker, clock.time_ms(), clock.monotonic_s())
        if self._startup.done:  # else numbered once recovery is done
            self._name(new, self._seq.next_seq(channel, window))
        lane.obj = new
        self._last_window[channel] = window
        self._starting.append(new)
        self.stats.objects_opened += 1
        self.stats.open_uploads += 1
        self._wake.set()
        return new

    def _name(self, obj: ArchiveObject, seq: int) -> None:
        obj.seq = seq
        obj.key = object_key(self._prefix, obj.channel, obj.window, self._hostname, seq)
        logger.info("S3 archive: opened %s", obj.key)

    def _open_objects(self) -> list[ArchiveObject]:
        return [lane.obj for lane in self._lanes.values() if lane.obj is not None]

    def _detach(self, obj: ArchiveObject) -> None:
        lane = self._lanes[obj.channel]
        if lane.obj is obj:
            lane.obj = None

    def _close(self, obj: ArchiveObject) -> None:
        """No more lines for ``obj``: cut the rest as its last part and let it complete."""
        self._detach(obj)
        if obj.closing:
            return
        obj.closing = True
        obj.finish()

    # -- background work ---------------------------------------------------------------------

    def start(self) -> None:
        """Run :meth:`run` as a background task (stopped by :meth:`aclose`)."""
        if self._runner is None:
            self._runner = asyncio.create_task(self.run(), name="s3-archive")

    async def run(self) -> None:
        """Rotate objects at their window's end and start upload tasks until :meth:`aclose`."""
        if self._running:
            raise RuntimeError("S3MultipartArchive.run() is already running")
        self._running = True
        self._startup.start()
        clock = self._clock
        while True:
            if (exc := self._startup.failure()) is not None:
                raise exc  # ArchiveMisconfigured: stop the service
            if self._startup.done:
                self._spawn()
            if self._closing:
                return
            now_ms = clock.time_ms()
            timeout = self._tick_s
            for obj in self._open_objects():
                if now_ms >= obj.window.end_ms:
                    logger.debug("S3 archive: window of %s ended", obj.key)
                    self._close(obj)
                else:
                    timeout = min(timeout, (obj.window.end_ms - now_ms) / 1000)
            self._drops.tick(clock.monotonic_s())
            self.stats.in_outage = self._requests.in_outage
            self._wake.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _spawn(self) -> None:
        for obj in self._starting:
            task = asyncio.create_task(self._uploader.drive(obj), name=f"s3-object-{obj.key}")
            self._tasks.add(task)
            task.add_done_callback(self._task_done)
        self._starting.clear()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("S3 archive: upload task %s crashed", task.get_name(), exc_info=exc)

    def _on_retry(self) -> None:
        self.stats.retries += 1
        self.stats.in_outage = True

    # -- lifecycle ---------------------------------------------------------------------------

    async def recover(self) -> RecoveryReport:
        """Finish uploads a crashed writer left open, remove stale markers, seed ``seq``,
        in the foreground (:meth:`run` does it in the background otherwise).

        Call once before :meth:`start` and the first :meth:`append`. Raises
        ``ArchiveError`` when S3 cannot be reached after the retry policy's
        ``recovery_attempts``, ``ArchiveMisconfigured`` at once on a wrong bucket or bad
        credentials.
        """
        if self._running or self.stats.objects_opened:
            raise RuntimeError("recover() must run before start() and the first append()")
        return await self._startup.run(self._retry.recovery_attempts)

    async def aclose(self, timeout_s: float | None = None) -> None:
        """Complete every open object within ``timeout_s`` (default ``close_timeout_s``).

        Lines appended afterwards are dropped and counted. Objects still open at the
        deadline are left for :meth:`recover` and logged; this never raises for them.
        """
        if self._closed:
            return
        self._closed = True
        self._closing = True
        self._limit = -1
        deadline = self._close_timeout_s if timeout_s is None else timeout_s
        for obj in self._open_objects():
            self._close(obj)
        started = asyncio.get_running_loop().time()
        await self._startup.drop_others()
        if self._running or self.stats.objects_opened:
            await self._startup.finish(deadline)
        # else a start that failed before the service ran: nothing to upload, and no
        # recovery at close, which could wait the whole deadline for an absent S3
        if self._startup.done:
            self._spawn()
        else:
            self._startup.abandon()
        self._wake.set()
        tasks = set(self._tasks)
        if tasks:
            left_s = max(0.0, deadline - (asyncio.get_running_loop().time() - started))
            _done, late = await asyncio.wait(tasks, timeout=left_s)
            for task in late:
                task.cancel()
            if late:
                await asyncio.gather(*late, return_exceptions=True)
                logger.error(
                    "S3 archive: shutdown deadline of %.0f s passed; %d objects left open "
                    "(%d lines not uploaded); the next start completes their uploaded parts",
                    deadline,
                    len(late),
                    self.stats.lost_lines,
                )
        if self._runner is not None:
            await self._runner
        self._drops.tick(self._clock.monotonic_s(), force=True)
        stats = self.stats
        stats.in_outage = self._requests.in_outage
        logger.info(
            "S3 archive closed: %d objects completed, %d parts, %d bytes uploaded, "
            "%d lines dropped, %d lines lost",
            stats.objects_completed,
            stats.parts_uploaded,
            stats.bytes_uploaded,
            stats.dropped_lines_total,
            stats.lost_lines,
        )
