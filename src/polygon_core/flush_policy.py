"""When the flush loop may write: group commit, a CPU budget only while the reader is behind.

The flush loop keeps at most one write in flight. When it is free and something is
pending, it writes at once: the socket reader runs on the same thread and only yields when
it has taken every frame its sockets held, so the write carries everything that had
arrived (the group commit of databases). The next write starts as soon as this one's reply
is in. Under load batches grow by themselves, by what arrived during the write; at low
rates each frame goes out on its own. No timer stands between a frame and its write.

Two limits can hold a write back, and neither depends on the machine's speed:

* ``min_interval_s``: flush starts at least this far apart (0 on Redis; 1 s on Upstash,
  whose cost is per command). A write after a quiet spell longer than the interval goes
  out at once (leading edge). With ``max_keys`` keys pending the interval no longer holds.
* The reader's share, only while the reader is behind (input already waits to be read):
  a write (mapping, encoding, replies) runs on the reader's thread, so then writing may
  take at most ``busy_fraction`` of the time: after a write that took ``d`` s, the next
  one waits until ``d (1 − f) / f`` s have passed *or until the reader has caught up*,
  whichever comes first. Only a reader that stays behind (a feed faster than the sink, a
  burst, a descheduled process) meets this limit, which is what keeps full-throttle
  throughput; at ordinary rates the reader catches up within microseconds of a write and
  the gap is cut at once, however long the write took on a slow or busy machine.

Pure: times come in as plain numbers (the ``Clock``'s monotonic seconds).
"""

from __future__ import annotations

__all__ = ["FlushPolicy"]


class FlushPolicy:
    """The two limits above; the flush loop asks before each write and reports after it."""

    __slots__ = ("_interval_s", "_max_keys", "_stretch", "_last_start_s", "_free_at_s")

    def __init__(
        self, *, min_interval_s: float = 0.0, max_keys: int = 10_000, busy_fraction: float = 0.25
    ) -> None:
        if min_interval_s < 0 or max_keys < 1 or not 0 < busy_fraction <= 1:
            raise ValueError("min_interval_s must be >= 0, max_keys >= 1, busy_fraction in (0, 1]")
        self._interval_s = min_interval_s
        self._max_keys = max_keys
        self._stretch = (1.0 - busy_fraction) / busy_fraction
        self._last_start_s = float("-inf")
        self._free_at_s = float("-inf")

    def interval_wait_s(self, now_s: float, pending: int) -> float:
        """Seconds until the minimum interval allows a write (0: it allows one now)."""
        if pending >= self._max_keys:
            return 0.0
        return max(self._last_start_s + self._interval_s - now_s, 0.0)

    def in_budget_gap(self, now_s: float) -> bool:
        """Whether a write now would exceed the busy fraction, were the reader behind."""
        return now_s < self._free_at_s

    def started(self, now_s: float) -> None:
        """A write starts at ``now_s``."""
        self._last_start_s = now_s

    def finished(self, now_s: float, took_s: float) -> None:
        """The write ended at ``now_s`` after ``took_s`` (the attempt that succeeded)."""
        self._free_at_s = now_s + took_s * self._stretch
