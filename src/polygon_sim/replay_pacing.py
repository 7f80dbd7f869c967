"""When replay sends: the pace of recorded time, and when a connection's subscriptions settle.

Pure policies driven by monotonic seconds passed in (a ``Clock``'s ``monotonic_s``), tested
with plain numbers.

:class:`ReplayPacer` maps ingest times to send times. ``speed`` 1 is the recorded pace,
``speed`` N is N times faster, 0 is as fast as the client reads. Both hosts share one pacer,
so their streams keep their recorded offsets: the first event either host sends anchors
recorded time to the monotonic clock; an event recorded ``d`` ms after the anchor is due
``d / 1000 / speed`` s after it. A host that falls behind (its reader is slow, or it was
disconnected) catches up as fast as it is read.

:class:`SettlePolicy` holds a connection's stream back until it has subscribed and sent no
subscribe message for ``settle_s``: a client subscribes in batches, and a stream started
after the first batch would skip the symbols of the later ones.
"""

from __future__ import annotations

import math

__all__ = ["ReplayPacer", "SettlePolicy"]


class ReplayPacer:
    """Recorded time -> monotonic send times (see the module docstring)."""

    __slots__ = ("speed", "_origin_ms", "_origin_s")

    def __init__(self, speed: float = 1.0) -> None:
        if not speed >= 0 or math.isinf(speed):
            raise ValueError(f"speed must be a finite number >= 0 (0: as fast as read): {speed}")
        self.speed = speed
        self._origin_ms: int | None = None
        self._origin_s = 0.0

    @property
    def anchored(self) -> bool:
        return self._origin_ms is not None

    def anchor(self, ingest_ms: int, now_s: float) -> None:
        """Tie recorded ``ingest_ms`` to ``now_s``; only the first call counts."""
        if self._origin_ms is None:
            self._origin_ms, self._origin_s = ingest_ms, now_s

    def due_s(self, ingest_ms: int) -> float:
        """When an event recorded at ``ingest_ms`` falls due (``-inf``: now, unpaced)."""
        if self.speed == 0 or self._origin_ms is None:
            return -math.inf
        return self._origin_s + (ingest_ms - self._origin_ms) / 1000.0 / self.speed

    def wait_s(self, ingest_ms: int, now_s: float) -> float:
        """Seconds until ``ingest_ms`` is due (0 when due); anchors on the first event."""
        self.anchor(ingest_ms, now_s)
        return max(0.0, self.due_s(ingest_ms) - now_s)

    def due_until_ms(self, now_s: float) -> float:
        """Every event recorded at or before this ingest time is due at ``now_s``."""
        if self.speed == 0 or self._origin_ms is None:
            return math.inf
        return self._origin_ms + (now_s - self._origin_s) * 1000.0 * self.speed


class SettlePolicy:
    """Whether a connection's subscriptions have settled (see the module docstring)."""

    __slots__ = ("settle_s", "_last_s", "_settled")

    def __init__(self, settle_s: float = 0.5) -> None:
        if not settle_s >= 0:
            raise ValueError(f"settle_s must be >= 0: {settle_s}")
        self.settle_s = settle_s
        self._last_s: float | None = None
        self._settled = False

    def subscribed(self, now_s: float) -> None:
        """A subscribe message came in (before settling; later ones change nothing)."""
        if not self._settled:
            self._last_s = now_s

    def wait_s(self, now_s: float) -> float | None:
        """0 once settled (for good), else the seconds left; ``None``: nothing subscribed."""
        if self._settled:
            return 0.0
        if self._last_s is None:
            return None
        left = self._last_s + self.settle_s - now_s
        if left <= 0:
            self._settled = True
            return 0.0
        return left
