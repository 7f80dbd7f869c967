"""In-memory adapters: a latest-value store, an archive and a manual clock.

Used by the core's tests, the contract suite (as the reference adapter) and the demo. They
behave like the real adapters as far as the ports go, including failure: set
``InMemoryLatestStore.fail_next`` (or ``available = False``) to make writes raise
``StoreUnavailable``.
"""

from __future__ import annotations

from collections.abc import Sequence

from polygon_core.errors import StoreUnavailable
from polygon_core.events import Channel
from polygon_core.ports import LatestValue

__all__ = ["InMemoryArchive", "InMemoryLatestStore", "ManualClock"]


class ManualClock:
    """A ``Clock`` that only moves when told to."""

    def __init__(self, time_ms: int = 1_746_630_245_000, monotonic_s: float = 1000.0) -> None:
        self._time_ms = time_ms
        self._monotonic_s = monotonic_s

    def time_ms(self) -> int:
        return self._time_ms

    def monotonic_s(self) -> float:
        return self._monotonic_s

    def advance(self, seconds: float) -> None:
        self._time_ms += round(seconds * 1000)
        self._monotonic_s += seconds


class InMemoryLatestStore:
    """``LatestStore`` over a dict; keys expire by the attached clock's monotonic time."""

    def __init__(self, clock: ManualClock | None = None) -> None:
        self._clock = clock
        self.data: dict[str, tuple[bytes, float]] = {}
        """key -> (value, expiry as monotonic seconds, or ttl when no clock)."""
        self.available = True
        self.fail_next = 0
        self.batches: list[int] = []
        """Size of every successful ``put_many`` call, in order."""
        self.closed = False

    async def put_many(self, values: Sequence[LatestValue]) -> None:
        if self.closed:
            raise StoreUnavailable("store is closed")
        if not self.available or self.fail_next > 0:
            self.fail_next = max(self.fail_next - 1, 0)
            raise StoreUnavailable("in-memory store made unavailable")
        now = self._clock.monotonic_s() if self._clock else 0.0
        for value in values:
            self.data[value.key] = (value.value, now + value.ttl_s)
        self.batches.append(len(values))

    def get(self, key: str) -> bytes | None:
        """The live value of ``key`` (``None`` when absent or expired)."""
        item = self.data.get(key)
        if item is None:
            return None
        if self._clock and item[1] <= self._clock.monotonic_s():
            del self.data[key]
            return None
        return item[0]

    async def read(self, key: str) -> bytes | None:
        """Async form of :meth:`get`, like the real stores' ``read``."""
        return self.get(key)

    def ttl(self, key: str) -> float | None:
        """Seconds left for ``key``, like Redis ``TTL`` (``None`` when absent)."""
        item = self.data.get(key)
        if item is None:
            return None
        return item[1] - (self._clock.monotonic_s() if self._clock else 0.0)

    async def aclose(self) -> None:
        self.closed = True


class InMemoryArchive:
    """``RawArchive`` that keeps every line per channel, in arrival order."""

    def __init__(self) -> None:
        self.lines: dict[Channel, list[bytes]] = {c: [] for c in Channel}
        self.closed = False

    def append(self, channel: Channel, lines: bytes, ingest_ms: int, count: int = 1) -> None:
        split = lines.splitlines(keepends=True)
        if len(split) != count:
            raise ValueError(f"append said {count} lines but got {len(split)}")
        self.lines[channel].extend(split)

    async def aclose(self) -> None:
        self.closed = True
