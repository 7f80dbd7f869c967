"""Ground truth of the local Polygon simulator: what it delivered, and to whom.

"Delivered" means handed to the socket (``await send`` returned). Events still in the
kernel's buffers when a connection is dropped abruptly may never reach the client, so after
an abrupt drop the counts here are an upper bound of what a client can have received.

* per host and per connection id: events per channel, frames, bytes, garbage sent, the
  topics held, open/auth/close times and the close code (1006: no close frame);
* per host: totals, and how many authenticated connections were open at once (now and the
  maximum ever seen, counted before an eviction takes effect: a sink that opens a second
  connection per host shows 2 here even though the simulator evicts one);
* optionally (``track_latest``) the newest event delivered per (channel, symbol): greatest
  event time (``s`` for ``AM``, ``t`` otherwise), the later delivery winning ties, which is
  exactly what latest-wins should leave in Redis;
* a log of connection events.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from polygon_core.subscriptions import FeedRole

__all__ = [
    "ConnectionEvent",
    "ConnectionEventKind",
    "ConnectionTruth",
    "DeliveredEvent",
    "HostTruth",
    "Latest",
    "Truth",
]

Latest = list[tuple[str, str, int, bytes]]
"""Delivered events for the newest-per-key record: (channel, symbol, event time, raw)."""


class ConnectionEventKind(StrEnum):
    OPENED = "opened"
    AUTHENTICATED = "authenticated"
    AUTH_FAILED = "auth_failed"
    AUTH_TIMEOUT = "auth_timeout"
    EVICTED = "evicted"
    """Got ``max_connections`` (a newer connection took the slot, or the fault)."""
    DISCONNECTED = "disconnected"
    """Got ``slow_consumer`` or ``force_disconnect`` (``detail`` says which)."""
    DROPPED = "dropped"
    """Dropped by :meth:`Faults.drop` (``code`` None: abruptly)."""
    CLOSED = "closed"
    """The connection ended; ``code`` as websockets reports it (1006: no close frame)."""


@dataclass(frozen=True, slots=True)
class ConnectionEvent:
    at_s: float
    """Wall-clock time (``time.time()``)."""
    host: FeedRole
    conn_id: int
    kind: ConnectionEventKind
    code: int | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class DeliveredEvent:
    channel: str
    symbol: str
    time: int
    """``s`` for ``AM``, ``t`` otherwise."""
    raw: bytes
    """The event's JSON exactly as sent."""
    conn_id: int


@dataclass(slots=True)
class ConnectionTruth:
    conn_id: int
    host: FeedRole
    opened_at_s: float
    authenticated_at_s: float | None = None
    closed_at_s: float | None = None
    close_code: int | None = None
    closed_by_server: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    """Events delivered per channel."""
    events: int = 0
    frames: int = 0
    """Frames holding data events."""
    bytes: int = 0
    garbage: int = 0
    """Garbage frames or elements sent."""
    topics: set[str] = field(default_factory=set)
    """Topics currently held, as acknowledged (``AM.AAPL``, ``T.*``)."""
    subscribe_requests: int = 0


@dataclass(slots=True)
class HostTruth:
    role: FeedRole
    connections: dict[int, ConnectionTruth] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    events: int = 0
    frames: int = 0
    authenticated_now: int = 0
    max_authenticated: int = 0
    """Most authenticated connections open at once on this host, ever."""
    latest: dict[tuple[str, str], DeliveredEvent] = field(default_factory=dict)


class Truth:
    """Everything the simulator delivered; see the module docstring."""

    def __init__(self, track_latest: bool = False) -> None:
        self.track_latest = track_latest
        self.hosts = {
            role: HostTruth(role, counts={c.value: 0 for c in role.channels}) for role in FeedRole
        }
        self.log: list[ConnectionEvent] = []
        self.total = 0
        """Data events delivered on every host and connection."""
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    # queries

    def counts(self) -> dict[str, int]:
        """Events delivered per channel, both hosts together."""
        return {c: n for host in self.hosts.values() for c, n in host.counts.items()}

    def connection(self, conn_id: int) -> ConnectionTruth:
        for host in self.hosts.values():
            if conn_id in host.connections:
                return host.connections[conn_id]
        raise KeyError(conn_id)

    def latest(self, channel: str, symbol: str) -> DeliveredEvent | None:
        """The newest ``channel`` event delivered for ``symbol`` (needs ``track_latest``)."""
        role = FeedRole.REALTIME if channel in ("AM", "FMV") else FeedRole.DELAYED
        return self.hosts[role].latest.get((channel, symbol))

    def events_of(
        self, kind: ConnectionEventKind | str, host: FeedRole | str | None = None
    ) -> list[ConnectionEvent]:
        kind = ConnectionEventKind(kind)
        role = None if host is None else FeedRole(host)
        return [e for e in self.log if e.kind is kind and (role is None or e.host is role)]

    async def wait_total(self, n: int, timeout_s: float = 10.0) -> None:
        """Wait until at least ``n`` events were delivered (``TimeoutError`` after
        ``timeout_s``)."""
        if self.total >= n:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (n, future)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout_s):
                await future
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    async def wait_for(self, condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
        """Poll ``condition`` every few milliseconds until it holds."""
        async with asyncio.timeout(timeout_s):
            while not condition():  # noqa: ASYNC110 - polling observable state is the point
                await asyncio.sleep(0.002)

    # recording (simulator side)

    def note(
        self,
        conn: ConnectionTruth,
        kind: ConnectionEventKind,
        code: int | None = None,
        detail: str = "",
    ) -> None:
        self.log.append(ConnectionEvent(time.time(), conn.host, conn.conn_id, kind, code, detail))

    def opened(self, conn_id: int, role: FeedRole) -> ConnectionTruth:
        conn = ConnectionTruth(
            conn_id, role, time.time(), counts={c.value: 0 for c in role.channels}
        )
        self.hosts[role].connections[conn_id] = conn
        self.note(conn, ConnectionEventKind.OPENED)
        return conn

    def authenticated(self, conn: ConnectionTruth) -> None:
        host = self.hosts[conn.host]
        conn.authenticated_at_s = time.time()
        host.authenticated_now += 1
        host.max_authenticated = max(host.max_authenticated, host.authenticated_now)
        self.note(conn, ConnectionEventKind.AUTHENTICATED)

    def deauthenticated(self, conn: ConnectionTruth) -> None:
        """The connection no longer holds a slot (evicted or closed)."""
        self.hosts[conn.host].authenticated_now -= 1

    def closed(self, conn: ConnectionTruth, code: int | None) -> None:
        conn.closed_at_s = time.time()
        conn.close_code = code
        self.note(conn, ConnectionEventKind.CLOSED, code)

    def delivered(
        self,
        conn: ConnectionTruth,
        channels: tuple[str, ...],
        counts: list[int],
        nbytes: int,
        latest: Latest | None,
    ) -> None:
        """Record one data frame: ``counts[i]`` events of ``channels[i]``."""
        host = self.hosts[conn.host]
        n = 0
        for channel, count in zip(channels, counts, strict=True):
            if count:
                conn.counts[channel] += count
                host.counts[channel] += count
                n += count
        conn.events += n
        conn.frames += 1
        conn.bytes += nbytes
        host.events += n
        host.frames += 1
        self.total += n
        if latest:
            newest = host.latest
            for channel, symbol, when, raw in latest:
                key = (channel, symbol)
                old = newest.get(key)
                if old is None or when >= old.time:
                    newest[key] = DeliveredEvent(channel, symbol, when, raw, conn.conn_id)
        if self._waiters:
            for entry in [w for w in self._waiters if w[0] <= self.total]:
                self._waiters.remove(entry)
                if not entry[1].done():
                    entry[1].set_result(None)
