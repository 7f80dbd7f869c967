"""The single-server write path's connection: one pooled connection kept for the batches.

redis-py's ``pool.get_connection()`` / ``release()`` and ``send_packed_command`` cost about
0.1 ms of client CPU per batch (the pool's lock and bookkeeping, a readiness probe of the
socket, and a task created by ``asyncio.wait_for`` for every send), more than packing and
writing a 10-value batch itself. A :class:`WriteLink` takes one connection from the pool
once and keeps it: a batch's RESP bytes go to the socket with one synchronous
``transport.write`` (drained, under the socket timeout, only when the kernel is not taking
them as fast); :func:`~polygon_adapters.redis_wire.read_replies` then reads the replies,
each socket read under the same timeout.

A connection that failed in any way is disconnected (its replies are unknown); the next
batch reconnects it, which resolves the URL's host name again (a managed primary endpoint
moves on failover). ``pool.disconnect()`` (leaving a node) drops it too. One the server
closed while it sat idle (a restart, ``CLIENT KILL``, the server's idle ``timeout``) is
seen before the batch is sent (its stream is at EOF) and reconnected, so that batch does
not fail. This relies on redis-py's connection internals (``_reader`` and ``_writer``,
like :func:`~polygon_adapters.redis_wire.read_replies` relies on its parser's): stable
since redis-py 4.2.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["WriteLink"]

_HIGH_WATER = 256 * 1024
"""Bytes left in the transport's buffer above which a send waits for the socket."""


class WriteLink:
    """One connection of ``pool`` for the batch writes (one batch at a time)."""

    __slots__ = ("_pool", "_conn")

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._conn: Any = None

    async def connection(self) -> Any:
        """The kept connection, (re)connected and health-checked when due."""
        conn = self._conn
        if conn is None:
            conn = self._conn = await self._pool.get_connection()
        elif not conn.is_connected:
            await conn.connect()
        elif _closed_by_server(conn):
            await conn.disconnect(nowait=True)
            await conn.connect()
        await conn.check_health()  # a PING only after health_check_interval idle
        return conn

    @staticmethod
    def timeout_s(conn: Any) -> float | None:
        """The connection's socket timeout (read and write), ``None`` for none."""
        timeout = getattr(conn, "socket_timeout", None)
        return float(timeout) if timeout else None

    async def send(self, conn: Any, payload: bytes) -> None:
        """Write ``payload``; waits for the socket only when the buffer is full."""
        writer = conn._writer
        if writer is None:
            raise ConnectionResetError("the connection to Redis is closed")
        writer.write(payload)
        if writer.transport.get_write_buffer_size() > _HIGH_WATER:
            async with asyncio.timeout(self.timeout_s(conn)):
                await writer.drain()

    async def drop(self, conn: Any) -> None:
        """Disconnect after a failure (whatever was in flight is unknown)."""
        await conn.disconnect(nowait=True)

    async def aclose(self) -> None:
        """Give the connection back to the pool (which the client then closes)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._pool.release(conn)


def _closed_by_server(conn: Any) -> bool:
    """Whether the server closed or reset ``conn`` since its last batch (a few attribute
    reads: no readiness probe of the socket, no await)."""
    reader = conn._reader
    return reader is not None and (reader.at_eof() or reader.exception() is not None)
