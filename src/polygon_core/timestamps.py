"""Formatting and normalising epoch timestamps (pure: the caller passes the time in)."""

from __future__ import annotations

import time

__all__ = ["iso_ms", "to_epoch_ms"]


def iso_ms(epoch_ms: int) -> str:
    """ISO-8601 UTC with milliseconds and ``Z``: ``2025-05-07T15:04:05.000Z``.

    Times before the epoch are clamped to it (they cannot come from a real clock).
    """
    epoch_ms = max(int(epoch_ms), 0)
    seconds, millis = divmod(epoch_ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def to_epoch_ms(value: int | float) -> float:
    """Normalise a Polygon timestamp to epoch milliseconds by its magnitude.

    Polygon documents milliseconds for ``AM``/``T``/``Q`` and nanoseconds for ``FMV``, and
    live frames disagree with the docs now and then (polygon-protocol.md §7), so the unit is
    read off the size: up to 1e11 seconds, up to 1e14 milliseconds, up to 1e17 microseconds,
    above that nanoseconds. Used for lag figures only; records copy the wire value.
    """
    v = float(value)
    a = abs(v)
    if a < 1e11:
        return v * 1000.0
    if a < 1e14:
        return v
    if a < 1e17:
        return v / 1000.0
    return v / 1_000_000.0
