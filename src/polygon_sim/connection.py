"""The state of one simulated WebSocket connection (:class:`Connection`).

The protocol logic that drives it (handshake, control messages, the data writer) is
:class:`polygon_sim.streamer.Streamer`.
"""

from __future__ import annotations

import asyncio

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from polygon_core.subscriptions import FeedRole
from polygon_sim.faults import StatusKill
from polygon_sim.market import Pick
from polygon_sim.truth import ConnectionTruth, Truth
from polygon_sim.wire import status_frame

__all__ = ["Connection"]


class Connection:
    """State of one client connection."""

    __slots__ = (
        "conn_id", "role", "ws", "record", "wildcard", "explicit", "picks", "pending",
        "wake", "closing", "authenticated", "writer", "stale", "oversize",
    )  # fmt: skip

    def __init__(self, conn_id: int, role: FeedRole, ws: ServerConnection, truth: Truth) -> None:
        self.conn_id = conn_id
        self.role = role
        self.ws = ws
        self.record: ConnectionTruth = truth.opened(conn_id, role)
        self.wildcard: set[str] = set()
        self.explicit: set[tuple[str, str]] = set()
        self.picks: list[Pick] = []
        self.pending: list[bytes] = []
        """Status or garbage elements to lead the next frame."""
        self.wake = asyncio.Event()
        self.closing = False
        self.authenticated = False
        self.writer: asyncio.Task[None] | None = None
        self.stale = 0
        self.oversize: list[int] = []

    def wants(self, channel: str, symbol: str) -> bool:
        return channel in self.wildcard or (channel, symbol) in self.explicit

    async def rest(self, timeout_s: float | None) -> None:
        """Sleep until woken (new topics, faults, budget) or ``timeout_s`` passes."""
        if not self.wake.is_set():
            try:
                async with asyncio.timeout(timeout_s):
                    await self.wake.wait()
            except TimeoutError:
                pass
        self.wake.clear()

    async def close_with(self, code: int | None, reason: str, status: StatusKill | None) -> None:
        try:
            if status is not None:
                await self.ws.send(status_frame(status.value, status.message), text=True)
            if code is None:
                self.ws.transport.abort()
            else:
                await self.ws.close(code, reason)
        except ConnectionClosed:
            pass
