"""Counters of the S3 archive (health log, metrics) and the rate-limited drop log."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from polygon_core.events import Channel

__all__ = ["AppendCounts", "ArchiveStats", "DropLog"]

logger = logging.getLogger("polygon_adapters.s3_archive")


class AppendCounts:
    """Lines and bytes appended to one channel (kept by the append path itself)."""

    __slots__ = ("lines", "bytes")

    def __init__(self) -> None:
        self.lines = 0
        self.bytes = 0


def _per_channel() -> Mapping[Channel, AppendCounts]:
    return {c: AppendCounts() for c in Channel}


@dataclass(slots=True)
class ArchiveStats:
    """What the archive has done so far. Totals never reset; gauges say "now".

    Gauges: ``bytes_buffered``/``lines_buffered`` (appended, not yet in an uploaded part;
    a line counts as uploaded once its newline is), ``open_uploads``, ``in_outage``,
    ``dropping``, ``recovering`` and ``degraded`` (any of the three). Everything else is a
    running total.
    """

    appended: Mapping[Channel, AppendCounts] = field(default_factory=_per_channel)
    """Per channel; read it through ``lines_appended`` and ``bytes_appended``."""
    dropped_lines: Counter[Channel] = field(default_factory=Counter)
    """Lines refused by ``append`` (memory budget full, or appended after ``aclose``)."""
    dropped_bytes: Counter[Channel] = field(default_factory=Counter)
    bytes_buffered: int = 0
    lines_buffered: int = 0
    parts_uploaded: int = 0
    bytes_uploaded: int = 0
    objects_opened: int = 0
    objects_completed: int = 0
    objects_failed: int = 0
    """Objects S3 refused for good (e.g. the upload was aborted behind our back)."""
    objects_abandoned: int = 0
    """Objects still open when the shutdown deadline passed (recovered on next start)."""
    lost_lines: int = 0
    """Lines of failed or abandoned objects not known to be in S3."""
    lost_bytes: int = 0
    retries: int = 0
    open_uploads: int = 0
    recovered_completed: int = 0
    recovered_aborted: int = 0
    markers_removed: int = 0
    in_outage: bool = False
    dropping: bool = False
    recovering: bool = False
    """Start-up recovery has not finished yet (S3 unreachable at start): lines buffer."""

    @property
    def degraded(self) -> bool:
        """Lines are not reaching S3 as they should: an outage, recovery or drops."""
        return self.in_outage or self.recovering or self.dropping

    @property
    def lines_appended(self) -> Counter[Channel]:
        return Counter({c: a.lines for c, a in self.appended.items() if a.lines})

    @property
    def bytes_appended(self) -> Counter[Channel]:
        return Counter({c: a.bytes for c, a in self.appended.items() if a.bytes})

    @property
    def dropped_lines_total(self) -> int:
        return sum(self.dropped_lines.values())

    @property
    def dropped_bytes_total(self) -> int:
        return sum(self.dropped_bytes.values())

    def snapshot(self) -> dict[str, int | bool | dict[str, int]]:
        """A plain dict for health logs and metrics exporters."""
        out: dict[str, int | bool | dict[str, int]] = {}
        names = (
            "lines_appended",
            "bytes_appended",
            *(n for n in self.__slots__ if n != "appended"),
        )
        for name in names:
            value = getattr(self, name)
            out[name] = (
                {str(k): v for k, v in value.items()} if isinstance(value, Counter) else value
            )
        out["degraded"] = self.degraded
        return out


class DropLog:
    """Logs dropping loudly but rarely: one ERROR line when an episode starts, one WARNING
    summary when no line has been dropped for ``quiet_s`` (flapping at the budget's edge
    stays one episode). Time is monotonic seconds, passed in."""

    def __init__(self, stats: ArchiveStats, budget_bytes: int, quiet_s: float) -> None:
        self._stats = stats
        self._budget = budget_bytes
        self._quiet_s = quiet_s
        self._started_s: float | None = None
        self._last_drop_s = 0.0
        self._lines: Counter[Channel] = Counter()
        self._bytes = 0

    def dropped(
        self,
        channel: Channel,
        nbytes: int,
        now_s: float,
        held_bytes: int,
        why: str,
        lines: int = 1,
    ) -> None:
        stats = self._stats
        stats.dropped_lines[channel] += lines
        stats.dropped_bytes[channel] += nbytes
        stats.dropping = True
        self._lines[channel] += lines
        self._bytes += nbytes
        self._last_drop_s = now_s
        if self._started_s is None:
            self._started_s = now_s
            logger.error(
                "S3 archive DROPPING lines: %s (%d of %d budget bytes held); "
                "counting drops per channel until it clears",
                why,
                held_bytes,
                self._budget,
            )

    def tick(self, now_s: float, *, force: bool = False) -> None:
        """Close the episode once drops have stopped for ``quiet_s`` (or now, ``force``)."""
        started = self._started_s
        if started is None or (not force and now_s - self._last_drop_s < self._quiet_s):
            return
        per_channel = ", ".join(f"{c.value}={n}" for c, n in sorted(self._lines.items()))
        logger.warning(
            "S3 archive stopped dropping: %d lines (%d bytes) dropped over %.1f s (%s)",
            sum(self._lines.values()),
            self._bytes,
            self._last_drop_s - started,
            per_channel,
        )
        self._started_s = None
        self._lines.clear()
        self._bytes = 0
        self._stats.dropping = False
