"""When a connection that receives nothing is dead: ping when idle, give up after a timeout.

A NAT or load balancer that drops a flow sends no FIN and no RST: the socket stays open and
simply receives nothing. :class:`LivenessPolicy` decides, from what a watchdog samples
every :attr:`~LivenessPolicy.tick_s`, when to send a ping and when to call the connection
dead:

* anything received (a data or status frame, or a pong) is proof of life, so a busy feed
  is never cut, however slow its pongs are;
* once nothing has arrived for ``ping_after_s`` (40 % of the idle timeout), one ping goes
  out (a quiet market still answers pings);
* once nothing has arrived for ``dead_after_s`` (80 % of ``idle_timeout_s``,
  ``WS_IDLE_TIMEOUT_SEC``, default 10 s), the connection is dead and is replaced. The
  other 20 % are for the new connection's dial and handshake, so that a silent connection
  is *replaced* within the idle timeout of the last thing it received.

The reader does no extra per-frame work: it already counts frames, and the watchdog passes
that counter to :meth:`~LivenessPolicy.poll`, which treats any change as activity. Since
the watchdog only samples, "the last activity" is the previous sample at which the counter
had not yet changed (the frame came after it), so a connection is called dead after at
most ``dead_after_s`` of silence and at least ``dead_after_s - tick_s``.

A stall of the watchdog itself (the event loop busy for longer than ``STALL_TICKS`` ticks,
so that the reader could not read either) is not counted as silence: what the peer sent
meanwhile may still be waiting to be read.

Pure: time is passed in as monotonic seconds.
"""

from __future__ import annotations

import math
from enum import Enum

__all__ = ["DEFAULT_IDLE_TIMEOUT_S", "LivenessAction", "LivenessPolicy"]

DEFAULT_IDLE_TIMEOUT_S = 10.0
DEAD_FRACTION = 0.8
PING_FRACTION = 0.4
STALL_TICKS = 4
_MAX_TICK_S = 0.25
_MIN_TICK_S = 0.005


class LivenessAction(Enum):
    """What the watchdog does after a :meth:`LivenessPolicy.poll`."""

    WAIT = "wait"
    PING = "ping"
    DEAD = "dead"


class LivenessPolicy:
    """Ping-when-idle and idle-timeout decisions for one connection at a time.

    Call :meth:`start` when a socket opens, then every :attr:`tick_s` :meth:`poll` with
    the reader's frame counter; :meth:`on_ping_sent` after a :attr:`~LivenessAction.PING`
    went out and :meth:`on_pong` once its pong came back.
    """

    __slots__ = (
        "idle_timeout_s",
        "dead_after_s",
        "ping_after_s",
        "tick_s",
        "_frames",
        "_sampled_s",
        "_alive_s",
        "_pinged_s",
    )

    def __init__(self, idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S) -> None:
        if not (math.isfinite(idle_timeout_s) and idle_timeout_s > 0):
            raise ValueError(f"idle timeout must be a positive number of s, got {idle_timeout_s}")
        self.idle_timeout_s = float(idle_timeout_s)
        self.dead_after_s = self.idle_timeout_s * DEAD_FRACTION
        """Silence after which the connection is dead (the rest of the timeout is for the
        reconnect)."""
        self.ping_after_s = self.idle_timeout_s * PING_FRACTION
        """Silence after which one ping is sent (its pong then has as long again)."""
        self.tick_s = min(_MAX_TICK_S, max(_MIN_TICK_S, self.idle_timeout_s / 40))
        """How often the watchdog should poll."""
        self._frames = 0
        self._sampled_s = 0.0
        self._alive_s = 0.0
        self._pinged_s: float | None = None

    def start(self, now: float, frames: int) -> None:
        """A socket opened at ``now``; ``frames`` is the reader's counter at that point."""
        self._frames = frames
        self._sampled_s = self._alive_s = now
        self._pinged_s = None

    @property
    def silent_s(self) -> float:
        """Seconds from the last sign of life to the last poll (an upper bound)."""
        return self._sampled_s - self._alive_s

    def poll(self, now: float, frames: int) -> LivenessAction:
        """Sample the frame counter at ``now`` and say what to do."""
        if frames != self._frames:
            self._frames = frames
            self._alive_s = max(self._alive_s, self._sampled_s)
        gap = now - self._sampled_s
        if gap > STALL_TICKS * self.tick_s:  # we were not running: that span tells nothing
            self._alive_s += gap - self.tick_s
        self._sampled_s = now
        silent = now - self._alive_s
        if silent >= self.dead_after_s:
            return LivenessAction.DEAD
        if silent >= self.ping_after_s and (
            self._pinged_s is None or self._pinged_s <= self._alive_s
        ):
            return LivenessAction.PING
        return LivenessAction.WAIT

    def on_ping_sent(self) -> None:
        """The ping the last :meth:`poll` asked for went out."""
        self._pinged_s = self._sampled_s

    def on_pong(self) -> None:
        """The pong of our ping arrived since the last poll: the peer is alive (as of the
        last poll, like a frame; call it before the next :meth:`poll`)."""
        self._alive_s = max(self._alive_s, self._sampled_s)

    def __repr__(self) -> str:
        return f"LivenessPolicy(idle_timeout_s={self.idle_timeout_s:g}, tick_s={self.tick_s:g})"
