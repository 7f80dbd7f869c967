"""The S3 archive's start-up recovery, in the foreground or in the background.

:meth:`StartupRecovery.run` recovers in the foreground (``S3MultipartArchive.recover``).
:meth:`StartupRecovery.start` does it in a background task, retrying without end, so that an
unreachable S3 never holds the hot path up: lines keep buffering within the archive's
budget, and objects opened meanwhile wait. Once recovery is done they are numbered, in the
order they were opened, after the highest ``seq`` their folder already holds for this host
(the current window's comes with the recovery, other windows' are listed then), so a
restart never overwrites an object; then the archive uploads them. An answer that says the
configuration is wrong ends the task with ``ArchiveMisconfigured`` (:meth:`failure`).

With ``others_after_s`` (``HA_ENABLED``) the recovery finishes only this hostname's uploads
at once, and other writers' ``others_after_s`` later (the predecessor of a handover
completes its own objects after it released the lease, within its shutdown timeout; a
killed one's are left open): :meth:`drop_others` cancels that step at close if it has not
finished, and the next task to take over finishes them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from polygon_adapters.s3_objects import ArchiveObject
from polygon_adapters.s3_recovery import (
    RecoveryReport,
    highest_seqs,
    recover_archive,
    recover_others,
)
from polygon_adapters.s3_stats import ArchiveStats
from polygon_adapters.s3_upload import S3Requests
from polygon_core.errors import ArchiveError
from polygon_core.events import Channel
from polygon_core.ports import Clock
from polygon_core.rotation import RotationPolicy, SeqCounter, Window

__all__ = ["StartupRecovery"]

logger = logging.getLogger("polygon_adapters.s3_archive")


class StartupRecovery:
    """Recovery for one archive; ``pending`` is the archive's list of objects not yet
    started (shared, in opening order), ``name`` gives an object its seq and key."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str,
        hostname: str,
        policy: RotationPolicy,
        clock: Clock,
        requests: S3Requests,
        stats: ArchiveStats,
        *,
        seq: SeqCounter,
        last_window: dict[Channel, Window],
        pending: list[ArchiveObject],
        name: Callable[[ArchiveObject, int], None],
        wake: asyncio.Event,
        lookback_hours: int,
        others_after_s: float | None = None,
    ) -> None:
        self._where = (client, bucket, prefix, hostname)
        self._policy = policy
        self._clock = clock
        self._requests = requests
        self._stats = stats
        self._seq = seq
        self._last_window = last_window
        self._pending = pending
        self._name = name
        self._wake = wake
        self._lookback_hours = lookback_hours
        self._task: asyncio.Task[None] | None = None
        self._others_after_s = others_after_s
        self._others: asyncio.Task[None] | None = None
        self.done = False
        """Recovery has finished: new objects are named at once and may be uploaded."""

    async def run(self, attempts: int | None) -> RecoveryReport:
        """Recover in the foreground (``attempts`` per call; ``None``: without end)."""
        report = await self._recover(attempts)
        self.done = True
        self._later()
        return report

    async def _recover(self, attempts: int | None) -> RecoveryReport:
        client, bucket, prefix, hostname = self._where
        report = await recover_archive(
            client,
            bucket,
            prefix,
            hostname,
            self._policy,
            self._seq,
            self._requests,
            now_ms=self._clock.time_ms(),
            attempts=attempts,
            lookback_hours=self._lookback_hours,
            others=self._others_after_s is None,
        )
        for channel, seq in report.seeded.items():
            last = self._last_window.get(channel)
            if report.window and (last is None or last.start_ms < report.window.start_ms):
                self._last_window[channel] = report.window
            logger.debug("S3 archive: %s continues after seq %d", channel.value, seq)
        self._count(report, "")
        return report

    def _count(self, report: RecoveryReport, whose: str) -> None:
        stats = self._stats
        stats.recovered_completed += len(report.completed)
        stats.recovered_aborted += len(report.aborted)
        stats.markers_removed += len(report.markers_removed)
        logger.info(
            "S3 archive recovery%s: %d uploads completed, %d aborted, %d stale markers removed",
            whose,
            len(report.completed),
            len(report.aborted),
            len(report.markers_removed),
        )

    def _later(self) -> None:
        """Schedule the other writers' uploads (``others_after_s``), once."""
        if self._others_after_s is None or self._others is not None:
            return
        self._others = asyncio.create_task(self._recover_others(self._others_after_s))

    async def _recover_others(self, after_s: float) -> None:
        await asyncio.sleep(after_s)
        client, bucket, prefix, hostname = self._where
        try:
            report = await recover_others(client, bucket, prefix, hostname, self._requests)
        except ArchiveError as exc:  # misconfigured now: the uploads wait for the next task
            logger.error("S3 archive: other writers' open uploads not recovered: %s", exc)
            return
        self._count(report, " (other writers' uploads)")

    def start(self) -> None:
        """Recover in a background task (once; nothing to do after :meth:`run`)."""
        if self.done or self._task is not None:
            return
        self._stats.recovering = True
        self._task = asyncio.create_task(self._background(), name="s3-recovery")
        self._task.add_done_callback(lambda _task: self._wake.set())

    def failure(self) -> BaseException | None:
        """What the background recovery ended with, if it failed."""
        task = self._task
        if task is None or not task.done() or task.cancelled():
            return None
        return task.exception()

    async def drop_others(self) -> None:
        """At close: cancel the other writers' step if it has not finished."""
        others = self._others
        if others is not None and not others.done():
            others.cancel()
            await asyncio.wait([others])
            logger.info("S3 archive: other writers' open uploads are left for the next task")

    async def finish(self, timeout_s: float) -> None:
        """At close: give the background recovery until the deadline (S3 may come back)."""
        self.start()
        task = self._task
        if task is None:
            return
        if not task.done():
            await asyncio.wait([task], timeout=timeout_s)
        if not task.done():
            task.cancel()
            await asyncio.wait([task])
        if (exc := self.failure()) is not None:
            logger.debug("S3 archive: recovery ended with %s", exc)

    def abandon(self) -> None:
        """Recovery never finished: the objects opened meanwhile were never uploaded."""
        pending = self._pending
        if not pending:
            return
        stats = self._stats
        for obj in pending:
            stats.objects_abandoned += 1
            stats.open_uploads -= 1
            stats.lost_lines += obj.lines
            stats.lost_bytes += obj.size_bytes
        logger.error(
            "S3 archive: S3 was not usable before the shutdown deadline; %d objects "
            "(%d lines) were never uploaded",
            len(pending),
            sum(obj.lines for obj in pending),
        )
        pending.clear()

    async def _background(self) -> None:
        report = await self._recover(None)
        known = {(c, report.window): seq for c, seq in report.seeded.items() if report.window}
        client, bucket, prefix, hostname = self._where
        while wanted := {(o.channel, o.window) for o in self._pending} - known.keys():
            known.update(
                await highest_seqs(client, bucket, prefix, hostname, self._requests, wanted)
            )
        for obj in self._pending:  # in the order they were opened
            known[obj.channel, obj.window] += 1
            self._name(obj, known[obj.channel, obj.window])
        for (channel, window), seq in sorted(known.items(), key=lambda kv: kv[0][1].start_ms):
            if window.start_ms >= self._last_window.get(channel, window).start_ms:
                self._seq.seed(channel, window, seq)
        self.done = True
        self._stats.recovering = False
        self._wake.set()
        self._later()
