"""Runtime fault switches of the local Polygon simulator (``PolygonSimulator.faults``).

Two kinds of switch:

* **Immediate** (:meth:`Faults.drop`, :meth:`Faults.evict`, :meth:`Faults.disconnect`): act
  on the connections open *now* on the chosen host (``None``: both hosts) and return how
  many were hit.
* **Queued** (:meth:`Faults.garbage`, :meth:`Faults.oversize`, :meth:`Faults.out_of_order`,
  :meth:`Faults.reject_auth`, :meth:`Faults.rest_fail`): wait until a connection (or an
  HTTP request) consumes them, so a test may arm them before the client connects.

All switches are off by default; :meth:`Faults.reset` turns everything off.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from enum import StrEnum

from polygon_core.subscriptions import FeedRole

__all__ = ["MIB", "Faults", "GarbageKind", "HostFaults", "HostSelector", "StatusKill"]

MIB = 1024 * 1024
HostSelector = FeedRole | str | None
"""``"realtime"``, ``"delayed"``, a :class:`FeedRole`, or ``None`` for both hosts."""


class GarbageKind(StrEnum):
    """Bad input a sink must count and survive (SPEC §4)."""

    INVALID_JSON = "invalid_json"
    """A whole frame that is not JSON (a truncated array)."""
    NON_ARRAY = "non_array"
    """A frame holding one JSON object instead of an array."""
    NAN = "nan"
    """A frame with a bare ``NaN`` number token (not JSON; some encoders emit it)."""
    INVALID_UTF8 = "invalid_utf8"
    """A text frame whose bytes are not UTF-8 (a ``0xff`` inside a string)."""
    UNKNOWN_EV = "unknown_ev"
    """An element with an unknown ``ev`` (``XYZ``) and a ``LULD``, beside valid data."""
    ILL_TYPED = "ill_typed"
    """A trade with a string price and a quote without ``bp``, beside valid data."""

    @property
    def whole_frame(self) -> bool:
        """Sent as a frame of its own (otherwise mixed into the next data frame)."""
        return self in (
            GarbageKind.INVALID_JSON,
            GarbageKind.NON_ARRAY,
            GarbageKind.NAN,
            GarbageKind.INVALID_UTF8,
        )


class StatusKill(StrEnum):
    """Statuses that end a connection, with their message texts."""

    MAX_CONNECTIONS = "max_connections"
    SLOW_CONSUMER = "slow_consumer"
    FORCE_DISCONNECT = "force_disconnect"

    @property
    def message(self) -> str:
        return {
            "max_connections": "Maximum number of websocket connections exceeded.",
            "slow_consumer": "Connection closed: client is not consuming messages fast enough.",
            "force_disconnect": "Connection closed by server.",
        }[self.value]


def _roles(host: HostSelector) -> tuple[FeedRole, ...]:
    return tuple(FeedRole) if host is None else (FeedRole(host),)


class HostFaults:
    """The queued WebSocket faults of one host; ``armed`` is the writer's one cheap check."""

    __slots__ = ("armed", "garbage", "oversize", "out_of_order")

    def __init__(self) -> None:
        self.armed = False
        self.garbage: deque[GarbageKind] = deque()
        self.oversize: deque[int] = deque()
        self.out_of_order = 0

    def rearm(self) -> None:
        self.armed = bool(self.garbage or self.oversize or self.out_of_order)


class Faults:
    """Fault switches; see the module docstring. Built by the simulator."""

    def __init__(
        self,
        kill: Callable[[tuple[FeedRole, ...], int | None, str, StatusKill | None], int],
        wake: Callable[[tuple[FeedRole, ...]], None],
    ) -> None:
        self._kill = kill
        self._wake = wake
        self.hosts = {role: HostFaults() for role in FeedRole}
        self.auth_rejects = 0
        """Auth attempts still to reject with ``auth_failed`` even with the right key."""
        self.rest_failures: deque[int] = deque()
        """HTTP statuses to answer the next tickers requests with, in order."""
        self.rest_repeat_after: int | None = None
        """When set, the ``next_url`` of page N (1-based, N >= 2) points back to page 2."""

    # immediate

    def drop(self, host: HostSelector = None, *, code: int | None = 1000, reason: str = "") -> int:
        """Close every open connection on ``host``: with close ``code`` (1000, 1001, ...),
        or with ``code=None`` abruptly, without a close frame (a TCP close; the client
        sees 1006). Returns the number of connections dropped."""
        return self._kill(_roles(host), code, reason, None)

    def drop_abruptly(self, host: HostSelector = None) -> int:
        """Close every open connection on ``host`` without a close handshake."""
        return self.drop(host, code=None)

    def evict(self, host: HostSelector = None) -> int:
        """As if another client took the slot: ``max_connections`` then close 1008."""
        return self.disconnect(StatusKill.MAX_CONNECTIONS, host, code=1008)

    def disconnect(
        self, status: StatusKill | str, host: HostSelector = None, *, code: int | None = 1008
    ) -> int:
        """Send ``status`` (``slow_consumer``, ``force_disconnect``, ``max_connections``)
        to every open connection on ``host``, then close with ``code`` (``None``: abort)."""
        return self._kill(_roles(host), code, "", StatusKill(status))

    # queued

    def garbage(self, kind: GarbageKind | str, host: HostSelector = None, count: int = 1) -> None:
        """Send ``count`` pieces of bad input of ``kind`` on ``host`` after auth."""
        self._queue(host, lambda f: f.garbage.extend([GarbageKind(kind)] * _at_least_1(count)))

    def oversize(
        self, size_bytes: int = 2 * MIB, host: HostSelector = None, count: int = 1
    ) -> None:
        """Make the next ``count`` data frames on ``host`` at least ``size_bytes`` of valid
        events each (``events_per_frame`` is ignored for them; ``max_events`` still holds)."""
        self._queue(host, lambda f: f.oversize.extend([size_bytes] * _at_least_1(count)))

    def out_of_order(self, host: HostSelector = None, count: int = 1) -> None:
        """Put ``count`` stale events (an older ``t``, or ``s`` for ``AM``, than one already
        delivered for that channel and symbol) into the coming data frames on ``host``."""

        def arm(f: HostFaults) -> None:
            f.out_of_order += _at_least_1(count)

        self._queue(host, arm)

    def reject_auth(self, count: int = 1) -> None:
        """Answer the next ``count`` auth attempts (any host) with ``auth_failed``."""
        self.auth_rejects += _at_least_1(count)

    def rest_fail(self, status: int = 429, count: int = 1) -> None:
        """Answer the next ``count`` tickers requests with HTTP ``status`` (429, 500, ...)."""
        self.rest_failures.extend([status] * _at_least_1(count))

    def rest_repeat_cursor(self, after_pages: int | None = 2) -> None:
        """The repeated-cursor bug: page ``after_pages``'s ``next_url`` loops back to the
        cursor of page 2. ``None`` turns it off."""
        if after_pages is not None and after_pages < 2:
            raise ValueError("after_pages must be at least 2 (page 1 has no cursor)")
        self.rest_repeat_after = after_pages

    def reset(self) -> None:
        """Turn every queued fault off."""
        for faults in self.hosts.values():
            faults.garbage.clear()
            faults.oversize.clear()
            faults.out_of_order = 0
            faults.armed = False
        self.auth_rejects = 0
        self.rest_failures.clear()
        self.rest_repeat_after = None

    # simulator side

    def take_auth_reject(self) -> bool:
        if self.auth_rejects > 0:
            self.auth_rejects -= 1
            return True
        return False

    def take_rest_failure(self) -> int | None:
        return self.rest_failures.popleft() if self.rest_failures else None

    def _queue(self, host: HostSelector, arm: Callable[[HostFaults], None]) -> None:
        roles = _roles(host)
        for role in roles:
            arm(self.hosts[role])
            self.hosts[role].rearm()
        self._wake(roles)


def _at_least_1(count: int) -> int:
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    return count
