"""Reconnect delays: exponential backoff with jitter, and the cooldown rules of SPEC §4.

:func:`backoff_delays` yields the ordinary delays: the n-th base is
``min(max, initial * factor**n)`` and each delay is ``base * (1 - jitter * random())``, so it
never exceeds ``max`` and never goes below ``base * (1 - jitter)`` (``BACKOFF_INITIAL_MS``,
``BACKOFF_FACTOR``, ``BACKOFF_MAX_MS``; defaults 1000 ms, 2.0, 30000 ms).

:class:`ReconnectPolicy` picks the delay before the next connection from why the last one
ended (``polygon-protocol.md`` §3, §4, §14 item 8):

* ``idle_timeout`` (nothing, not even a pong, arrived for most of ``WS_IDLE_TIMEOUT_SEC``: a NAT
  or load balancer dropped the flow without a FIN or RST) on a connection that had been
  healthy (no reconnects pending, :attr:`ReconnectPolicy.attempt` 0): no wait at all, so
  the silent connection is replaced as soon as it is found; a repeated one backs off like
  a drop;
* an ordinary drop, ``auth_timeout``, ``slow_consumer``, ``force_disconnect``, a failed
  handshake or an abnormal close: the next backoff delay;
* ``auth_failed`` (bad key, or a plan without this host): retrying soon cannot help, so wait
  ``max(max backoff, 60 s)`` (``auth_failed_cooldown_s``). The service keeps retrying at that
  slow pace instead of exiting, so a key or plan fixed on the dashboard is picked up;
* ``max_connections`` (another client holds this account's slot; eviction is FIFO and comes
  *after* ``auth_success``, §4): never under 60 s and at least the max backoff, so two
  holders of one slot do not fight back and forth (alpaca-trade-api-python PR #89).

The backoff resets only once a connection has delivered data for a while: market data
arrived and the connection was still up ``healthy_after_s`` (default 30 s) after the first
data frame (checked on each later frame and at the disconnect). It never resets on
``auth_success``: eviction arrives after auth, and resetting there makes the "permanent hot
loop at roughly one attempt per second" of §4 (SPEC §4).

Pure: time is passed in as monotonic seconds and randomness as a callable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from enum import StrEnum

__all__ = [
    "DEFAULT_FACTOR",
    "DEFAULT_INITIAL_MS",
    "DEFAULT_MAX_MS",
    "MIN_COOLDOWN_S",
    "DisconnectReason",
    "ReconnectPolicy",
    "backoff_delays",
]

DEFAULT_INITIAL_MS = 1000.0
DEFAULT_FACTOR = 2.0
DEFAULT_MAX_MS = 30000.0
MIN_COOLDOWN_S = 60.0
"""The floor after ``max_connections`` and ``auth_failed`` (§4: "a long cooldown (e.g. ≥ 60 s)")."""


class DisconnectReason(StrEnum):
    """Why a connection ended. Values that are wire statuses equal the ``status`` string."""

    DROP = "drop"
    """The socket closed or failed without a status saying why (any close code)."""
    CONNECT_FAILED = "connect_failed"
    """DNS, TCP, TLS or the WebSocket upgrade failed."""
    AUTH_FAILED = "auth_failed"
    AUTH_TIMEOUT = "auth_timeout"
    MAX_CONNECTIONS = "max_connections"
    SLOW_CONSUMER = "slow_consumer"
    FORCE_DISCONNECT = "force_disconnect"
    SERVER_ERROR = "server_error"
    """The server reported an error that ends the connection (e.g. close code 1011)."""
    PROTOCOL_ERROR = "protocol_error"
    """The server broke the handshake rules (e.g. ``auth_required`` after auth)."""
    IDLE_TIMEOUT = "idle_timeout"
    """Nothing (no frame, no pong) arrived for too long (``WS_IDLE_TIMEOUT_SEC``): a silently
    dropped flow."""
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    """The adapter gave up waiting for ``connected``/``auth_success``."""
    CLIENT_CLOSED = "client_closed"
    """We closed on purpose (shutdown); not followed by a reconnect."""


def _check(initial_ms: float, factor: float, max_ms: float, jitter: float) -> None:
    if not (math.isfinite(initial_ms) and initial_ms > 0):
        raise ValueError(f"initial backoff must be a positive number of ms, got {initial_ms}")
    if not (math.isfinite(factor) and factor >= 1):
        raise ValueError(f"backoff factor must be at least 1, got {factor}")
    if not (math.isfinite(max_ms) and max_ms >= initial_ms):
        raise ValueError(
            f"max backoff ({max_ms} ms) must be at least the initial ({initial_ms} ms)"
        )
    if not 0 <= jitter <= 1:
        raise ValueError(f"jitter must be within [0, 1], got {jitter}")


def backoff_delays(
    initial_ms: float,
    factor: float,
    max_ms: float,
    random: Callable[[], float],
    jitter: float = 0.2,
) -> Iterator[float]:
    """Endless reconnect delays in **seconds** (see the module docstring).

    ``random`` returns a float in ``[0, 1)`` (e.g. ``random.random``); values outside are
    clamped. Arguments are checked here, not at the first ``next()``: ``initial_ms > 0``,
    ``factor >= 1``, ``max_ms >= initial_ms``, ``0 <= jitter <= 1``, all finite.
    """
    _check(initial_ms, factor, max_ms, jitter)
    return _delays(float(initial_ms), float(factor), float(max_ms), random, float(jitter))


def _delays(
    base_ms: float, factor: float, max_ms: float, random: Callable[[], float], jitter: float
) -> Iterator[float]:
    base_ms = min(base_ms, max_ms)
    while True:
        r = min(1.0, max(0.0, random()))
        yield base_ms * (1.0 - jitter * r) / 1000.0
        base_ms = min(max_ms, base_ms * factor)  # inf * factor saturates at max_ms


class ReconnectPolicy:
    """How long to wait before reconnecting, given why the last connection ended.

    Call :meth:`on_connected` when a socket opens, :meth:`on_data` for frames carrying
    market data (cheap: call it per frame), and :meth:`next_delay` when the connection ends.
    """

    __slots__ = (
        "_initial_ms",
        "_factor",
        "_max_ms",
        "_random",
        "_jitter",
        "_delays",
        "_first_data_s",
        "healthy_after_s",
        "auth_failed_cooldown_s",
        "max_connections_cooldown_s",
        "attempt",
        "retry_at_s",
        "connected_at_s",
    )

    def __init__(
        self,
        *,
        initial_ms: float = DEFAULT_INITIAL_MS,
        factor: float = DEFAULT_FACTOR,
        max_ms: float = DEFAULT_MAX_MS,
        random: Callable[[], float],
        jitter: float = 0.2,
        healthy_after_s: float = 30.0,
        min_cooldown_s: float = MIN_COOLDOWN_S,
    ) -> None:
        _check(initial_ms, factor, max_ms, jitter)
        if not healthy_after_s >= 0:
            raise ValueError(f"healthy_after_s must be >= 0, got {healthy_after_s}")
        if not min_cooldown_s >= 0:
            raise ValueError(f"min_cooldown_s must be >= 0, got {min_cooldown_s}")
        self._initial_ms = float(initial_ms)
        self._factor = float(factor)
        self._max_ms = float(max_ms)
        self._random = random
        self._jitter = float(jitter)
        self._delays = self._fresh()
        self._first_data_s: float | None = None
        self.healthy_after_s = float(healthy_after_s)
        max_s = self._max_ms / 1000.0
        self.auth_failed_cooldown_s = max(max_s, min_cooldown_s)
        """Wait after ``auth_failed``: ``max(max backoff, 60 s)``."""
        self.max_connections_cooldown_s = max(max_s, min_cooldown_s)
        """Wait after ``max_connections``: ``max(max backoff, 60 s)``."""
        self.attempt = 0
        """Reconnects since the last healthy connection (0 = none yet)."""
        self.retry_at_s: float | None = None
        """When the next connection attempt is due (monotonic seconds), if one is."""
        self.connected_at_s: float | None = None
        """When the current (or last) socket opened."""

    def _fresh(self) -> Iterator[float]:
        return _delays(self._initial_ms, self._factor, self._max_ms, self._random, self._jitter)

    @property
    def max_backoff_s(self) -> float:
        return self._max_ms / 1000.0

    def reset(self) -> None:
        """Start the ordinary backoff from the initial delay again."""
        self._delays = self._fresh()
        self.attempt = 0

    def on_connected(self, now: float) -> None:
        """A socket opened (before auth). Nothing resets here."""
        self.connected_at_s = now
        self._first_data_s = None
        self.retry_at_s = None

    def on_data(self, now: float) -> None:
        """Market data arrived; once it has flowed for ``healthy_after_s``, reset the backoff."""
        first = self._first_data_s
        if first is None:
            self._first_data_s = first = now
        if self.attempt and now - first >= self.healthy_after_s:
            self.reset()

    def next_delay(self, reason: DisconnectReason, now: float) -> float:
        """Seconds to wait before the next attempt after a connection ended for ``reason``.

        Also records :attr:`retry_at_s` (``now`` + the delay). ``auth_failed`` and
        ``max_connections`` advance the ordinary backoff too, so a following drop keeps
        growing instead of starting small.
        """
        first = self._first_data_s
        if first is not None and now - first >= self.healthy_after_s:
            self.reset()  # data flowed and the connection then stayed up long enough
        self._first_data_s = None
        if reason == DisconnectReason.IDLE_TIMEOUT and not self.attempt:
            self.attempt = 1
            self.retry_at_s = now
            return 0.0
        delay = next(self._delays)
        self.attempt += 1
        if reason == DisconnectReason.AUTH_FAILED:
            delay = max(delay, self.auth_failed_cooldown_s)
        elif reason == DisconnectReason.MAX_CONNECTIONS:
            delay = max(delay, self.max_connections_cooldown_s)
        self.retry_at_s = now + delay
        return delay

    def __repr__(self) -> str:
        return (
            f"ReconnectPolicy(attempt={self.attempt}, initial_ms={self._initial_ms:g}, "
            f"factor={self._factor:g}, max_ms={self._max_ms:g}, jitter={self._jitter:g})"
        )
