"""The ingest use case: frames in, latest values to the store, raw lines to the archive.

:meth:`Ingest.on_frame` runs on the socket reader and never awaits: it offers each event to
the :class:`~polygon_core.conflation.ConflationBuffer` (latest wins by event time), hands
archive lines to the archive (which only buffers), and counts rejects.

:meth:`Ingest.run_flush_loop` is a separate task that drains the buffer into the
:class:`~polygon_core.ports.LatestStore`. A flush starts when something is pending, at most
once per ``flush_interval_s`` (sooner when ``flush_max_keys`` keys are waiting), and never
while another is in flight, so a slow store batches more and writes less (group commit)
instead of slowing the reader. Under load the gap also stretches with the flush's own
duration, so that writing takes at most about ``flush_busy_fraction`` of the time: a flush
that took 4 ms is followed by at least 12 ms of pure conflation (at the default 0.25).
Light load keeps the short interval (fresh values); heavy load writes each busy key once per
cycle instead of once per event. The stretched gap is cut short once no event has arrived
for ``QUIET_STEP_S`` (the reader is idle, nothing to protect). With ``flush_eager_below``
set, the interval holds only after a flush of at least that many values: at low rates
(small batches) each frame is written as soon as the busy-fraction gap allows, since there
is little to coalesce and latency is what matters; the runner turns it on for Redis, not
for Upstash (whose cost is per command). A batch goes out in
chunks of ``flush_chunk`` values so the reader runs between them. When the store fails, what
was not written goes back into the buffer (unless a newer value arrived meanwhile) and the
write is retried with backoff; one log line marks the outage and one its end. Memory stays
bounded by the number of keys.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator

from polygon_core.backoff import backoff_delays
from polygon_core.codec import DecodedFrame, archive_blocks
from polygon_core.conflation import EventConflation
from polygon_core.errors import StoreUnavailable
from polygon_core.events import Channel, MarketEvent
from polygon_core.keys import TtlPolicy
from polygon_core.mappers import encode_record
from polygon_core.ports import Clock, LatestStore, LatestValue, RawArchive, Scheduler
from polygon_core.timestamps import iso_ms

__all__ = ["QUIET_STEP_S", "FlushStats", "Ingest"]

QUIET_STEP_S = 0.002
"""During a busy-fraction gap, a step this long without a new event means the reader is
idle and the gap is cut short."""

logger = logging.getLogger(__name__)
_MINUS_INF = float("-inf")
_Batch = list[tuple[str, int | float, MarketEvent]]


class FlushStats:
    """Counters of the write path (read by health logs and metrics; never reset)."""

    __slots__ = (
        "flushes",
        "values_written",
        "failed_flushes",
        "outages",
        "last_flush_s",
        "max_flush_s",
        "flush_seconds_total",
        "last_success_monotonic",
        "in_outage",
    )

    def __init__(self) -> None:
        self.flushes = 0
        self.values_written = 0
        self.failed_flushes = 0
        self.outages = 0
        self.last_flush_s = 0.0
        self.max_flush_s = 0.0
        self.flush_seconds_total = 0.0
        self.last_success_monotonic: float | None = None
        self.in_outage = False


class Ingest:
    """Frames -> conflation buffer -> store, plus the raw archive.

    ``rng`` is the random source for retry jitter (the runner passes ``random.random``;
    without one, retries use the plain exponential delays). ``flush_observer(seconds,
    values)`` is called after each successful flush (metrics).
    """

    def __init__(
        self,
        store: LatestStore,
        clock: Clock,
        scheduler: Scheduler,
        *,
        ttl: TtlPolicy | None = None,
        archive: RawArchive | None = None,
        flush_interval_s: float = 0.002,
        flush_max_keys: int = 10_000,
        flush_busy_fraction: float = 0.25,
        flush_chunk: int = 2000,
        flush_eager_below: int = 0,
        retry_initial_s: float = 0.05,
        retry_max_s: float = 1.0,
        log_writes: bool = False,
        rng: Callable[[], float] | None = None,
        flush_observer: Callable[[float, int], None] | None = None,
    ) -> None:
        if flush_interval_s < 0 or flush_max_keys < 1 or not 0 < flush_busy_fraction <= 1:
            raise ValueError(
                "flush interval must be >= 0, flush_max_keys >= 1, busy fraction in (0, 1]"
            )
        self._store = store
        self._clock = clock
        self._scheduler = scheduler
        policy = ttl or TtlPolicy()
        self._ttl_by_channel = {c: policy.for_channel(c) for c in Channel}
        self._archive = archive
        self._interval_s = flush_interval_s
        self._max_keys = flush_max_keys
        self._stretch = (1.0 - flush_busy_fraction) / flush_busy_fraction
        self._chunk = max(flush_chunk, 1)
        self._eager_below = flush_eager_below
        self._last_batch = 0
        self._retry = (retry_initial_s * 1000.0, retry_max_s * 1000.0)
        self._log_writes = log_writes
        self._rng = rng or (lambda: 0.0)
        self._observe = flush_observer
        self.buffer = EventConflation()
        self.archived_by_channel: Counter[Channel] = Counter()
        self.rejects_by_reason: Counter[str] = Counter()
        self.stats = FlushStats()
        self._newest_written: dict[Channel, int | float] = {}
        self._stopping = False
        self._last_flush_start = float("-inf")
        self._last_flush_end = float("-inf")
        self._last_flush_s = 0.0

    @property
    def events_by_channel(self) -> dict[Channel, int]:
        """Events taken in per channel (late ones included)."""
        return self.buffer.events_by_channel

    @property
    def newest_event_time(self) -> dict[Channel, int | float]:
        """The newest event time written to the store per channel (``s`` for AM, ``t``
        otherwise). Lag = now − this, so it also grows while the store is down. Kept per
        written value (after conflation), not per event."""
        return dict(self._newest_written)

    @property
    def keep_raw(self) -> bool:
        """Whether frames must be decoded with their raw bytes (the archive is on)."""
        return self._archive is not None

    # -- the socket reader's side: synchronous, no I/O -------------------------------------

    def on_frame(self, frame: DecodedFrame, receive_ms: int) -> None:
        """Take one decoded frame received at ``receive_ms`` (epoch ms). Never awaits."""
        buffer = self.buffer
        before = len(buffer)
        if frame.events:
            buffer.offer_events(frame.events)
        if frame.rejects:
            self._count_rejects(frame)
        archive = self._archive
        if archive is not None and (frame.bodies or frame.entries):
            archived = self.archived_by_channel
            for channel, lines, count in archive_blocks(frame, iso_ms(receive_ms).encode()):
                archive.append(channel, lines, receive_ms, count)
                archived[channel] += count
        after = len(buffer)
        if (before == 0 < after) or (before < self._max_keys <= after):
            self._scheduler.poke()

    def _count_rejects(self, frame: DecodedFrame) -> None:
        debug = logger.isEnabledFor(logging.DEBUG)
        for reject in frame.rejects:
            self.rejects_by_reason[reject.reason.value] += 1
            if debug:
                logger.debug(
                    "reject %s: %s; excerpt %r", reject.reason, reject.detail, reject.excerpt
                )

    # -- the flush task ----------------------------------------------------------------------

    async def run_flush_loop(self) -> None:
        """Drain the buffer into the store until :meth:`stop`; then one final flush."""
        scheduler = self._scheduler
        clock = self._clock
        while not self._stopping:
            if not len(self.buffer):
                await scheduler.wait_for_poke(None)
                continue
            # The configured interval holds unless many keys wait (or, with eager flushing,
            # the last batch was small: nothing to coalesce); the busy-fraction gap
            # protects the reader's CPU, so it holds while events keep arriving and is cut
            # short once the reader has gone quiet (nothing to protect).
            now = clock.monotonic_s()
            if len(self.buffer) < self._max_keys and self._last_batch >= self._eager_below:
                wait = self._last_flush_start + self._interval_s - now
                if wait > 0:
                    await scheduler.wait_for_poke(wait)
                    continue
            wait = self._last_flush_end + self._last_flush_s * self._stretch - now
            if wait > 0:
                seen = self.buffer.accepted
                poked = await scheduler.wait_for_poke(min(wait, QUIET_STEP_S))
                if poked or self.buffer.accepted != seen:
                    continue  # still busy (or woken early): keep conflating
            self._last_flush_start = clock.monotonic_s()
            # The gap follows the write that succeeded, not the outage before it.
            self._last_flush_s = await self._flush_with_retry()
            self._last_flush_end = clock.monotonic_s()

    def stop(self) -> None:
        """Ask the flush loop to end; it returns after the flush in flight."""
        self._stopping = True
        self._scheduler.poke()

    async def final_flush(self, attempts: int = 3) -> int:
        """Write what is pending (after :meth:`stop`), retrying a few times.

        Returns the number of values still not written (0 on success); they are logged
        loudly. The caller bounds the time with its shutdown deadline.
        """
        delays = self._delays()
        for attempt in range(attempts):
            if not len(self.buffer):
                return 0
            if await self.flush_once():
                continue
            if attempt + 1 < attempts:
                await self._scheduler.sleep(next(delays))
        left = len(self.buffer)
        if left:
            logger.error("shutdown: %d latest values could not be written to the store", left)
        return left

    async def flush_once(self) -> bool:
        """Write one batch. True on success (or nothing to do), False after a retryable
        failure (what was not written is back in the buffer). Fatal store errors propagate.

        The batch goes out in chunks of ``flush_chunk`` values; each chunk is mapped just
        before it is sent, and awaiting its write lets the socket reader run, so a batch
        of tens of thousands of keys never blocks the reader for long.
        """
        batch = self.buffer.drain()
        if not batch:
            return True
        self._last_batch = len(batch)
        clock = self._clock
        updated_at = iso_ms(clock.time_ms())
        ttl = self._ttl_by_channel
        encode = encode_record
        newest = self._newest_written
        size = self._chunk
        written = 0
        started = clock.monotonic_s()
        try:
            while written < len(batch):
                part = batch[written : written + size]
                values = [
                    LatestValue(key, encode(event, updated_at), ttl[event.channel])
                    for key, _t, event in part
                ]
                await self._store.put_many(values)
                written += len(part)
                self._log_written(values)
                newest_of = newest.get
                for _key, t, event in part:
                    channel = event.channel
                    if t > newest_of(channel, _MINUS_INF):
                        newest[channel] = t
        except StoreUnavailable as exc:
            self._count_written(written)
            self._on_failure(batch[written:], exc)
            return False
        except BaseException:
            self._count_written(written)
            self.buffer.requeue(batch[written:])
            raise
        self._on_success(written, clock.monotonic_s() - started)
        return True

    async def _flush_with_retry(self) -> float:
        """Flush, retrying with backoff until it succeeds (or :meth:`stop`); returns how long
        the last attempt took."""
        clock = self._clock
        delays: Iterator[float] | None = None
        while True:
            started = clock.monotonic_s()
            ok = await self.flush_once()
            elapsed = clock.monotonic_s() - started
            if ok or self._stopping:
                return elapsed
            if delays is None:
                delays = self._delays()
            await self._scheduler.sleep(next(delays))

    def _delays(self) -> Iterator[float]:
        initial_ms, max_ms = self._retry
        return backoff_delays(initial_ms, 2.0, max_ms, self._rng)

    def _on_failure(self, batch: _Batch, exc: StoreUnavailable) -> None:
        stats = self.stats
        stats.failed_flushes += 1
        self.buffer.requeue(batch)
        if not stats.in_outage:
            stats.in_outage = True
            stats.outages += 1
            logger.error(
                "store unavailable (%s); keeping %d latest values and retrying with backoff",
                exc,
                len(self.buffer),
            )

    def _count_written(self, count: int) -> None:
        self.stats.values_written += count

    def _on_success(self, count: int, elapsed_s: float) -> None:
        stats = self.stats
        stats.flushes += 1
        stats.values_written += count
        stats.last_flush_s = elapsed_s
        stats.flush_seconds_total += elapsed_s
        if elapsed_s > stats.max_flush_s:
            stats.max_flush_s = elapsed_s
        if self._observe is not None:
            self._observe(elapsed_s, count)
        stats.last_success_monotonic = self._clock.monotonic_s()
        if stats.in_outage:
            stats.in_outage = False
            logger.warning("store recovered; writes resumed (%d values in this batch)", count)

    def _log_written(self, values: list[LatestValue]) -> None:
        if self._log_writes and logger.isEnabledFor(logging.DEBUG):
            for value in values:
                logger.debug(
                    "redis_write key=%s ttl=%d",
                    value.key,
                    value.ttl_s,
                    extra={"event": "redis_write", "key": value.key, "ttl": value.ttl_s},
                )
