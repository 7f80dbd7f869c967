"""Formatting and normalising epoch timestamps (pure: the caller passes the time in)."""

from __future__ import annotations

import time

__all__ = ["iso_ms", "iso_ms_bytes", "to_epoch_ms"]


def iso_ms(epoch_ms: int) -> str:
    """ISO-8601 UTC with milliseconds and ``Z``: ``2025-05-07T15:04:05.000Z``.

    Times before the epoch are clamped to it (they cannot come from a real clock).
    """
    epoch_ms = max(int(epoch_ms), 0)
    seconds, millis = divmod(epoch_ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


_MILLIS = tuple(b".%03dZ" % ms for ms in range(1000))
_SECONDS: dict[int, bytes] = {}
"""``YYYY-MM-DDTHH:MM:SS`` of the last few seconds formatted (bounded)."""


def iso_ms_bytes(epoch_ms: int) -> bytes:
    """``iso_ms(epoch_ms).encode()``, formatting the date and time once per second (the
    archive stamps every frame, and the frames of one second share that part)."""
    epoch_ms = max(int(epoch_ms), 0)
    seconds, millis = divmod(epoch_ms, 1000)
    head = _SECONDS.get(seconds)
    if head is None:
        if len(_SECONDS) >= 8:
            _SECONDS.clear()
        head = _SECONDS[seconds] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)).encode()
    return head + _MILLIS[millis]


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
