"""The trading-day clock of the realistic market: which session it is, and how busy.

US equities (New York time): overnight quiet 20:00-04:00, pre-market 04:00-09:30, the open
burst 09:30-10:00, midday 10:00-15:30, the close 15:30-16:00, after-hours 16:00-20:00.
:class:`SessionClock` maps the wall clock to a time of day that starts at a chosen session
and may run ``speed`` times faster than the wall clock (compressed days); event times stay
on the wall clock, only the activity level follows the session. Pure: driven by the
wall-clock seconds it is given.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["SESSIONS", "SessionClock", "intensity", "session_at"]

_H = 3600
SESSIONS: dict[str, tuple[int, int]] = {
    "overnight": (20 * _H, 28 * _H),  # wraps past midnight to 04:00
    "pre": (4 * _H, 9 * _H + 30 * 60),
    "open": (9 * _H + 30 * 60, 10 * _H),
    "midday": (10 * _H, 15 * _H + 30 * 60),
    "close": (15 * _H + 30 * 60, 16 * _H),
    "after": (16 * _H, 20 * _H),
}
"""Session name -> (start, end) in seconds after New York midnight."""
_LEVEL = {"overnight": 0.01, "pre": 0.08, "after": 0.06}
"""Activity of the quiet sessions, relative to midday (1.0)."""


def session_at(day_s: float) -> str:
    """The session at ``day_s`` seconds after New York midnight."""
    day_s %= 24 * _H
    for name, (start, end) in SESSIONS.items():
        if start <= day_s < end or start <= day_s + 24 * _H < end:
            return name
    return "overnight"


def intensity(day_s: float) -> float:
    """Activity at ``day_s`` relative to midday: the open starts at 4x and decays to 1.5x,
    the close climbs from 1.5x to 3x, the extended sessions and the night are quiet."""
    name = session_at(day_s)
    if name == "open":
        start, end = SESSIONS["open"]
        return 4.0 - 2.5 * ((day_s % (24 * _H)) - start) / (end - start)
    if name == "close":
        start, end = SESSIONS["close"]
        return 1.5 + 1.5 * ((day_s % (24 * _H)) - start) / (end - start)
    return _LEVEL.get(name, 1.0)


def _new_york_day_s(wall_s: float) -> float:
    """Seconds after New York midnight at ``wall_s`` (the system's tz database, else UTC-5)."""
    try:
        offset = ZoneInfo("America/New_York").utcoffset(datetime.fromtimestamp(wall_s, UTC))
    except ZoneInfoNotFoundError:  # no tz database in a slim image: standard time
        offset = None
    shift = offset.total_seconds() if offset is not None else -5 * _H
    return (wall_s + shift) % (24 * _H)


@dataclass(frozen=True, slots=True)
class SessionClock:
    """Time of day from the wall clock: ``start`` (a session name, or ``now`` for New
    York's real time) at ``wall_start_s``, running ``speed`` times the wall clock."""

    start: str = "open"
    speed: float = 1.0
    wall_start_s: float = 0.0

    def __post_init__(self) -> None:
        if self.start != "now" and self.start not in SESSIONS:
            raise ValueError(f"unknown session {self.start!r}: {sorted(SESSIONS)} or 'now'")
        if self.speed <= 0:
            raise ValueError("speed must be positive")

    @classmethod
    def starting(cls, start: str = "open", speed: float = 1.0) -> SessionClock:
        return cls(start, speed, time.time())

    def day_s(self, wall_s: float) -> float:
        """Seconds after (simulated) New York midnight at wall-clock ``wall_s``."""
        if self.start == "now":
            origin = _new_york_day_s(self.wall_start_s)
        else:
            origin = SESSIONS[self.start][0]
        return (origin + (wall_s - self.wall_start_s) * self.speed) % (24 * _H)

    def session(self, wall_s: float) -> str:
        return session_at(self.day_s(wall_s))

    def intensity(self, wall_s: float) -> float:
        return intensity(self.day_s(wall_s))
