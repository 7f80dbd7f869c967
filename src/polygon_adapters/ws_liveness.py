"""The liveness watchdog of one WebSocket connection (the I/O half of ``LivenessPolicy``).

It runs beside the socket reader for the connection's whole life. Every
:attr:`~polygon_core.liveness.LivenessPolicy.tick_s` it samples the reader's frame counter
(the reader does nothing extra per frame), sends a ping when the policy says the
connection has been idle for 40 % of the timeout, and, when nothing at all (no frame, no
pong) has arrived for 80 % of it, aborts the transport: a silently dropped flow gets no
answer to a close frame, so waiting for the closing handshake would only add seconds. The
reader then sees the connection closed and the feed reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import Protocol

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from polygon_core.liveness import LivenessAction, LivenessPolicy
from polygon_core.ports import Clock

__all__ = ["found_silent", "stop_watchdog", "watch_liveness"]

logger = logging.getLogger(__name__)


class FrameCounter(Protocol):
    """What the watchdog reads: the reader's count of frames received so far."""

    @property
    def frames(self) -> int: ...


async def watch_liveness(
    ws: ClientConnection, counter: FrameCounter, policy: LivenessPolicy, clock: Clock
) -> float | None:
    """Watch ``ws`` until it is found silent; abort it then and return the seconds of
    silence. Runs until cancelled otherwise; ``None`` if a ping found it closed."""
    policy.start(clock.monotonic_s(), counter.frames)
    pong: Awaitable[float] | None = None
    while True:
        await asyncio.sleep(policy.tick_s)
        if pong is not None and _answered(pong):
            policy.on_pong()
            pong = None
        action = policy.poll(clock.monotonic_s(), counter.frames)
        if action is LivenessAction.DEAD:
            ws.transport.abort()
            return policy.silent_s
        if action is LivenessAction.PING:
            policy.on_ping_sent()
            try:  # a full send buffer must not hold the watchdog up
                async with asyncio.timeout(policy.tick_s):
                    pong = await ws.ping()
            except TimeoutError:
                pass
            except ConnectionClosed:
                return None  # closed anyway; the reader reports why


def _answered(pong: Awaitable[float]) -> bool:
    """The pong came (websockets' Future has a result); a failed or cancelled one (the
    connection closed) is not a pong."""
    if not isinstance(pong, asyncio.Future) or not pong.done():
        return False
    with contextlib.suppress(asyncio.CancelledError):
        return pong.exception() is None
    return False


def found_silent(watchdog: asyncio.Future[float | None]) -> float | None:
    """The seconds of silence if ``watchdog`` ended the connection for it, else ``None``."""
    if not watchdog.done() or watchdog.cancelled() or watchdog.exception() is not None:
        return None
    return watchdog.result()


async def stop_watchdog(watchdog: asyncio.Future[float | None]) -> None:
    """Cancel and reap ``watchdog``; an error it ended with is logged, never left for
    asyncio's "exception was never retrieved"."""
    watchdog.cancel()
    await asyncio.wait([watchdog])
    if not watchdog.cancelled() and (exc := watchdog.exception()) is not None:
        logger.error("liveness watchdog failed: %s", exc, exc_info=exc)
