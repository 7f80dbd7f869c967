"""The ingest use case: frames in, latest values to the store, raw lines to the archive.

:meth:`Ingest.on_frame` runs on the socket reader and never awaits: it offers each event to
the :class:`~polygon_core.conflation.ConflationBuffer` (latest wins by event time), hands
archive lines to the archive (which only buffers), and counts rejects.

:meth:`Ingest.run_flush_loop` is a separate task that drains the buffer into the
:class:`~polygon_core.ports.LatestStore` by group commit (:mod:`polygon_core.flush_policy`):
at most one write in flight; when it is free and something is pending, it writes
everything pending at once, and the next write starts as soon as the reply is in. The
reader only yields after taking every frame its sockets held, so a write carries all that
had arrived; under load batches grow by themselves (a slow store batches more and writes
less instead of slowing the reader), at low rates each frame is written on its own. While
the reader is behind (``reader_behind``: input waits to be read), writing is held to
``flush_busy_fraction`` of the time; ``flush_interval_s`` spaces flush starts
(Upstash). A batch goes out in chunks of ``flush_chunk`` values so the reader runs between
them. When the store fails, what was not written goes back into the buffer (unless a newer
value arrived meanwhile) and the write is retried with backoff; one log line marks the
outage and one its end. Memory stays bounded by the number of keys.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator

from polygon_core.archive_lines import archive_blocks
from polygon_core.backoff import backoff_delays
from polygon_core.codec import DecodedFrame
from polygon_core.conflation import EventConflation
from polygon_core.errors import LeaseLost, StoreUnavailable
from polygon_core.events import Channel, MarketEvent
from polygon_core.flush_policy import FlushPolicy
from polygon_core.keys import TtlPolicy
from polygon_core.mappers import encode_record
from polygon_core.ports import Clock, LatestStore, LatestValue, RawArchive, Scheduler
from polygon_core.timestamps import iso_ms, iso_ms_bytes

__all__ = ["FlushStats", "Ingest"]

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
        "held_expired",
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
        self.held_expired = 0
        """Values held across a standby period (``HA_ENABLED``: the lease was lost with
        them pending) and dropped when the lease was ours again, being older than their
        key's TTL by then."""


class Ingest:
    """Frames -> conflation buffer -> store, plus the raw archive.

    ``rng`` is the random source for retry jitter (the runner passes ``random.random``;
    without one, retries use the plain exponential delays). ``flush_observer(seconds,
    values)`` is called after each successful flush (metrics). ``reader_behind()`` says
    whether input already waits to be read (the service asks the feeds; without it the
    reader is taken to have caught up: pure group commit).
    """

    def __init__(
        self,
        store: LatestStore,
        clock: Clock,
        scheduler: Scheduler,
        *,
        ttl: TtlPolicy | None = None,
        archive: RawArchive | None = None,
        flush_interval_s: float = 0.0,
        flush_max_keys: int = 10_000,
        flush_busy_fraction: float = 0.25,
        flush_chunk: int = 2000,
        reader_behind: Callable[[], bool] | None = None,
        retry_initial_s: float = 0.05,
        retry_max_s: float = 1.0,
        log_writes: bool = False,
        rng: Callable[[], float] | None = None,
        flush_observer: Callable[[float, int], None] | None = None,
    ) -> None:
        self._policy = FlushPolicy(
            min_interval_s=flush_interval_s,
            max_keys=flush_max_keys,
            busy_fraction=flush_busy_fraction,
        )
        self.reader_behind = reader_behind or (lambda: False)
        self._store = store
        self._clock = clock
        self._scheduler = scheduler
        policy = ttl or TtlPolicy()
        self._ttl_by_channel = {c: policy.for_channel(c) for c in Channel}
        self._archive = archive
        self._max_keys = flush_max_keys
        self._chunk = max(flush_chunk, 1)
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
        self._held_since: float | None = None
        self._held_items: dict[str, MarketEvent] = {}
        """At :meth:`resume`: the values held, written only over an older record."""

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
            for channel, lines, count in archive_blocks(frame, iso_ms_bytes(receive_ms)):
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
        policy = self._policy
        buffer = self.buffer
        while not self._stopping:
            pending = len(buffer)
            if not pending or self._held_since is not None:
                await scheduler.wait_for_poke(None)  # a poke: a frame, resume, or stop
                continue
            now = clock.monotonic_s()
            wait = policy.interval_wait_s(now, pending)
            if wait > 0:
                await scheduler.wait_for_poke(wait)  # a poke: max_keys reached, or stop
                continue
            if policy.in_budget_gap(now) and self.reader_behind():
                await scheduler.sleep(0)  # let the reader take what waits, then ask again
                continue
            policy.started(now)
            await self._flush_with_retry()
            # The budget follows the write that succeeded, not the outage before it.
            policy.finished(clock.monotonic_s(), self.stats.last_flush_s)

    # -- the leader lease (HA_ENABLED) --------------------------------------------------------

    @property
    def held(self) -> bool:
        """Whether writes are held (a standby keeping the last term's pending values)."""
        return self._held_since is not None

    def hold(self) -> None:
        """Stop writing and keep what is pending: this task is no longer the leader (the
        store refused a batch as fenced, or the lease was lost). The flush loop waits
        until :meth:`resume`; the values then go out through the store's latest-wins
        write, so none rolls back a key that the other task wrote since."""
        if self._held_since is None:
            self._held_since = self._clock.monotonic_s()

    def resume(self) -> int:
        """The lease is ours again: write what was held, less the values held longer than
        their key's TTL (a value that would have expired by now is not brought back with
        a fresh TTL). The age counts from the hold, which every held value predates. Each
        held value is written only over an older record (``LatestValue.strictly_newer``):
        one of the same time written meanwhile by the task that led is the later one.
        Returns the count dropped."""
        since = self._held_since
        if since is None:
            return 0
        self._held_since = None
        age_s = self._clock.monotonic_s() - since
        ttl = self._ttl_by_channel
        dropped = self.buffer.drop_pending(lambda event: ttl[event.channel] > age_s)
        self.stats.held_expired += dropped
        self._held_items = self.buffer.pending_items()
        self._scheduler.poke()
        return dropped

    def stop(self) -> None:
        """Ask the flush loop to end; it returns after the flush in flight."""
        self._stopping = True
        self._scheduler.poke()

    async def final_flush(self, attempts: int = 3) -> int:
        """Write what is pending (after :meth:`stop`), retrying a few times.

        Returns the number of values still not written (0 on success); they are logged
        loudly. A standby's held values (see :meth:`hold`) are logged but not counted as
        a failure: a standby may not write. The caller bounds the time with its shutdown
        deadline.
        """
        delays = self._delays()
        for attempt in range(attempts):
            if not len(self.buffer) or self._held_since is not None:
                break
            if await self.flush_once():
                continue
            if attempt + 1 < attempts:
                await self._scheduler.sleep(next(delays))
        left = len(self.buffer)
        if left and self._held_since is not None:  # a standby may not write: another leads
            logger.warning("shutdown: standby; %d values held from the last term not written", left)
            return 0
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
        clock = self._clock
        updated_at = iso_ms(clock.time_ms())
        ttl = self._ttl_by_channel
        encode = encode_record
        newest = self._newest_written
        size = self._chunk
        written = 0
        started = clock.monotonic_s()
        held = self._held_items
        try:
            while written < len(batch):
                part = batch[written : written + size]
                if held:  # the first write of a new term: values held from the last one
                    values = [
                        LatestValue(
                            key,
                            encode(event, updated_at),
                            ttl[event.channel],
                            t,
                            held.get(key) is event,
                        )
                        for key, t, event in part
                    ]
                else:
                    values = [
                        LatestValue(key, encode(event, updated_at), ttl[event.channel], t)
                        for key, t, event in part
                    ]
                await self._store.put_many(values)
                written += len(part)
                if held:
                    for key, _t, _event in part:
                        held.pop(key, None)
                self._log_written(values)
                newest_of = newest.get
                for _key, t, event in part:
                    channel = event.channel
                    if t > newest_of(channel, _MINUS_INF):
                        newest[channel] = t
        except LeaseLost as exc:  # deposed: keep the rest for the next term; no retry now
            self._count_written(written)
            kept = self.buffer.requeue(batch[written:])
            self.hold()
            logger.warning("not the leader: %d values held for the next term (%s)", kept, exc)
            return True
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

    async def _flush_with_retry(self) -> None:
        """Flush, retrying with backoff until it succeeds (or :meth:`stop`)."""
        delays: Iterator[float] | None = None
        while True:
            ok = await self.flush_once()
            if ok or self._stopping:
                return
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
