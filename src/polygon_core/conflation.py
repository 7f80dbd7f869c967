"""Latest-wins conflation: the newest item per key between two flushes.

:class:`ConflationBuffer` is the heart of the write path. Events are offered synchronously
as they arrive; :meth:`~ConflationBuffer.drain` hands the flush loop one item per key.

Rules (SPEC §2):

* An item replaces the pending one for its key when its event time is newer or equal
  (equal: the later arrival wins).
* The buffer remembers the event time of the newest item accepted per key, pending or
  already handed out, so a late event (older than what was written or is being written) is
  dropped and counted, never allowed to roll the key back.
* :meth:`~ConflationBuffer.requeue` puts a batch whose write failed back, key by key, unless
  a newer (or equally new, later) item arrived meanwhile.

Memory is bounded by the number of distinct keys, not by the event rate.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Generic, TypeVar

from polygon_core.events import (
    Channel,
    FairMarketValue,
    MarketEvent,
    MinuteAggregate,
    Quote,
    Trade,
)
from polygon_core.keys import KEY_PREFIXES

__all__ = ["ConflationBuffer", "EventConflation"]

T = TypeVar("T")


class ConflationBuffer(Generic[T]):
    """Newest item per key, with late-event rejection. Not thread-safe (one event loop)."""

    __slots__ = ("_newest", "_pending", "accepted", "late_dropped", "superseded")

    def __init__(self) -> None:
        self._newest: dict[str, int | float] = {}
        self._pending: dict[str, tuple[int | float, T]] = {}
        self.accepted = 0
        """Items taken in (each replaced or will be written)."""
        self.late_dropped = 0
        """Items older than the newest accepted for their key: dropped."""
        self.superseded = 0
        """Pending items replaced by a newer one before a flush (writes saved)."""

    def offer(self, key: str, event_time: int | float, item: T) -> bool:
        """Take ``item`` unless it is older than the newest accepted for ``key``."""
        newest = self._newest.get(key)
        if newest is not None and event_time < newest:
            self.late_dropped += 1
            return False
        self._newest[key] = event_time
        pending = self._pending
        if key in pending:
            self.superseded += 1
        pending[key] = (event_time, item)
        self.accepted += 1
        return True

    def drain(self) -> list[tuple[str, int | float, T]]:
        """Hand over every pending ``(key, event_time, item)`` and empty the buffer."""
        pending = self._pending
        if not pending:
            return []
        self._pending = {}
        return [(key, t, item) for key, (t, item) in pending.items()]

    def requeue(self, batch: Iterable[tuple[str, int | float, T]]) -> int:
        """Put back items whose write failed, unless a newer one arrived; returns the count
        put back."""
        pending = self._pending
        restored = 0
        for key, event_time, item in batch:
            if key not in pending and self._newest.get(key) == event_time:
                pending[key] = (event_time, item)
                restored += 1
        return restored

    def newest_time(self, key: str) -> int | float | None:
        """Event time of the newest item accepted for ``key`` (``None`` if never seen)."""
        return self._newest.get(key)

    def __len__(self) -> int:
        """Keys waiting for the next flush."""
        return len(self._pending)

    @property
    def known_keys(self) -> int:
        """Distinct keys ever accepted (the size of the late-event memory)."""
        return len(self._newest)


_PREFIX: dict[type, str] = {
    MinuteAggregate: KEY_PREFIXES[Channel.AM],
    FairMarketValue: KEY_PREFIXES[Channel.FMV],
    Trade: KEY_PREFIXES[Channel.T],
    Quote: KEY_PREFIXES[Channel.Q],
}
_CHANNEL: dict[type, Channel] = {
    MinuteAggregate: Channel.AM,
    FairMarketValue: Channel.FMV,
    Trade: Channel.T,
    Quote: Channel.Q,
}


class EventConflation(ConflationBuffer[MarketEvent]):
    """:class:`ConflationBuffer` of market events keyed by the Redis key schema.

    :meth:`offer_events` does what ``offer(key_for(e.channel, e.symbol), event_time(e), e)``
    does for each event, in one tight loop (the reader's hot path), and also counts events
    per channel and remembers the newest event time per channel (for lag figures).
    """

    __slots__ = ("_counts", "_newest_by_type")

    def __init__(self) -> None:
        super().__init__()
        self._counts: dict[type, int] = dict.fromkeys(_PREFIX, 0)
        self._newest_by_type: dict[type, int | float] = {}

    def offer_events(self, events: Sequence[MarketEvent]) -> None:
        """Offer every event in arrival order (events must have valid symbols)."""
        newest = self._newest
        pending = self._pending
        counts = self._counts
        latest = self._newest_by_type
        prefix = _PREFIX
        accepted = late = superseded = 0
        for event in events:
            kind = type(event)
            t: int | float
            if isinstance(event, Quote | Trade):
                t = event.timestamp_ms
            elif isinstance(event, MinuteAggregate):
                t = event.start_ms
            else:
                t = event.timestamp
            counts[kind] += 1
            if t > latest.get(kind, -1):
                latest[kind] = t
            key = prefix[kind] + event.symbol
            known = newest.get(key)
            if known is not None and t < known:
                late += 1
                continue
            newest[key] = t
            if key in pending:
                superseded += 1
            pending[key] = (t, event)
            accepted += 1
        self.accepted += accepted
        self.late_dropped += late
        self.superseded += superseded

    @property
    def events_by_channel(self) -> dict[Channel, int]:
        """Events offered per channel (late ones included)."""
        return {_CHANNEL[kind]: n for kind, n in self._counts.items()}

    @property
    def newest_by_channel(self) -> dict[Channel, int | float]:
        """The newest event time offered per channel (``s`` for AM, ``t`` otherwise)."""
        return {_CHANNEL[kind]: t for kind, t in self._newest_by_type.items()}
