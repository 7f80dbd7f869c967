"""Latest-wins conflation: the newest item per key between two flushes.

:class:`ConflationBuffer` is the heart of the write path. Events are offered synchronously
as they arrive; :meth:`~ConflationBuffer.drain` hands the flush loop one item per key.

Rules (SPEC §2):

* An item replaces the pending one for its key when its event time is newer or equal
  (equal: the later arrival wins).
* The buffer remembers the newest item accepted per key, pending or already handed out, so
  a late event (older than what was written or is being written) is dropped and counted,
  never allowed to roll the key back.
* :meth:`~ConflationBuffer.requeue` puts a batch whose write failed back, key by key, unless
  a newer (or equally new, later) item arrived meanwhile.

Memory is bounded by the number of distinct keys, not by the event rate: one small list
``[event time, item]`` per key, plus the keys waiting for the next flush (each mapped to its
list, so :meth:`~ConflationBuffer.drain` reads the lists without a second lookup by key).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

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

    __slots__ = ("_state", "_pending", "accepted", "late_dropped", "_handed_out")

    def __init__(self) -> None:
        self._state: dict[str, list[Any]] = {}
        """key -> [event time, item] of the newest item accepted (pending or handed out)."""
        self._pending: dict[str, list[Any]] = {}
        """key -> its ``_state`` list, for the keys waiting for the next flush."""
        self.accepted = 0
        """Items taken in (each replaced or will be written)."""
        self.late_dropped = 0
        """Items older than the newest accepted for their key: dropped."""
        self._handed_out = 0

    def offer(self, key: str, event_time: int | float, item: T) -> bool:
        """Take ``item`` unless it is older than the newest accepted for ``key``."""
        current = self._state.get(key)
        if current is None:
            current = self._state[key] = [event_time, item]
        elif event_time < current[0]:
            self.late_dropped += 1
            return False
        else:
            current[0] = event_time
            current[1] = item
        self._pending[key] = current
        self.accepted += 1
        return True

    def drain(self) -> list[tuple[str, int | float, T]]:
        """Hand over every pending ``(key, event_time, item)`` and empty the buffer."""
        pending = self._pending
        if not pending:
            return []
        self._pending = {}
        batch = [(key, entry[0], entry[1]) for key, entry in pending.items()]
        self._handed_out += len(batch)
        return batch

    def requeue(self, batch: Iterable[tuple[str, int | float, T]]) -> int:
        """Put back items whose write failed, unless a newer one arrived; returns the count
        put back."""
        pending = self._pending
        state = self._state
        restored = 0
        for key, event_time, item in batch:
            current = state.get(key)
            if key not in pending and current is not None and current[1] is item:
                if current[0] == event_time:
                    pending[key] = current
                    restored += 1
        self._handed_out -= restored
        return restored

    def drop_pending(self, keep: Callable[[T], bool]) -> int:
        """Forget the pending items for which ``keep(item)`` is false (they stay the newest
        accepted for their key, so an older event is still refused); returns the count."""
        pending = self._pending
        dropped = [key for key, entry in pending.items() if not keep(entry[1])]
        for key in dropped:
            del pending[key]
        self._handed_out += len(dropped)
        return len(dropped)

    @property
    def superseded(self) -> int:
        """Accepted items replaced by a newer one before they were written (writes saved)."""
        return self.accepted - self._handed_out - len(self._pending)

    def newest_time(self, key: str) -> int | float | None:
        """Event time of the newest item accepted for ``key`` (``None`` if never seen)."""
        current = self._state.get(key)
        return None if current is None else current[0]

    def __len__(self) -> int:
        """Keys waiting for the next flush."""
        return len(self._pending)

    @property
    def known_keys(self) -> int:
        """Distinct keys ever accepted (the size of the late-event memory)."""
        return len(self._state)


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
_TIME: dict[type, Callable[[Any], int | float]] = {
    MinuteAggregate: operator.attrgetter("start_ms"),
    FairMarketValue: operator.attrgetter("timestamp"),
    Trade: operator.attrgetter("timestamp_ms"),
    Quote: operator.attrgetter("timestamp_ms"),
}


class EventConflation(ConflationBuffer[MarketEvent]):
    """:class:`ConflationBuffer` of market events keyed by the Redis key schema.

    :meth:`offer_events` does what ``offer(key_for(e.channel, e.symbol), event_time(e), e)``
    does for each event, in one tight loop (the reader's hot path), and also counts events
    per channel.
    """

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        super().__init__()
        self._counts: dict[type, int] = dict.fromkeys(_PREFIX, 0)

    def offer_events(self, events: Sequence[MarketEvent]) -> None:
        """Offer every event in arrival order (events must have valid symbols)."""
        state = self._state
        pending = self._pending
        counts = self._counts
        prefix = _PREFIX
        time_of = _TIME
        late = 0
        for event in events:
            kind = type(event)
            t = time_of[kind](event)
            counts[kind] += 1
            key = prefix[kind] + event.symbol
            current = state.get(key)
            if current is None:
                current = state[key] = [t, event]
            elif t < current[0]:
                late += 1
                continue
            else:
                current[0] = t
                current[1] = event
            pending[key] = current
        self.accepted += len(events) - late
        self.late_dropped += late

    @property
    def events_by_channel(self) -> dict[Channel, int]:
        """Events offered per channel (late ones included)."""
        return {_CHANNEL[kind]: n for kind, n in self._counts.items()}
