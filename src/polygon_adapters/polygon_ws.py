"""``FeedSource`` over one Polygon/Massive WebSocket host (websockets' asyncio client).

One instance keeps one connection to ``{host}/stocks`` alive: it connects, lets the core's
:class:`~polygon_core.protocol.FeedSession` drive the handshake and subscriptions, hands
every decoded frame to the ingest synchronously, and reconnects after every drop (clean
closes included) with :class:`~polygon_core.backoff.ReconnectPolicy`'s delays. It never holds
two connections: the old socket is closed before a new one is dialled.

The reader loop only reads, decodes and calls the frame handler, which does no I/O, so a
slow Redis or S3 never leaves the socket unread. Frames are read as bytes (no str detour)
up to ``max_frame_bytes``; permessage-deflate is off (it costs CPU per event and the feed is
read in-region). Liveness (:mod:`polygon_adapters.ws_liveness`, ``WS_IDLE_TIMEOUT_SEC``):
a connection on which nothing arrives is pinged after 40 % of the idle timeout, dropped
after 80 % and so replaced within it; any frame counts as proof of life, so a busy feed
with slow pongs is never cut (websockets' own keepalive, which would, is off).

``debug=True`` (``WS_DEBUG``) logs inbound frames (truncated) and outbound frames; the API
key is redacted from both.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import termios
from collections import Counter
from collections.abc import Callable

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from polygon_adapters.ws_liveness import found_silent, stop_watchdog, watch_liveness
from polygon_core.backoff import DisconnectReason, ReconnectPolicy
from polygon_core.codec import DecodedFrame, FrameDecoder
from polygon_core.liveness import DEFAULT_IDLE_TIMEOUT_S, LivenessPolicy
from polygon_core.ports import Clock, FrameHandler
from polygon_core.protocol import FeedSession, SessionState
from polygon_core.subscriptions import FeedRole, SymbolSelection

__all__ = ["FeedStats", "PolygonWebSocketFeed"]

logger = logging.getLogger(__name__)
_DEBUG_EXCERPT = 300


class _NoFrameDebug(logging.LoggerAdapter[logging.Logger]):
    """websockets' client logger with its DEBUG output off: websockets logs every frame at
    DEBUG, the auth frame and its key included, whenever the root logger is at DEBUG. Our
    own ``debug=True`` frame logs (redacted) replace it."""

    def isEnabledFor(self, level: int) -> bool:
        return level > logging.DEBUG and self.logger.isEnabledFor(level)


_WIRE_LOGGER = _NoFrameDebug(logging.getLogger("websockets.client"), {})


class FeedStats:
    """Per-connection figures for the health log and metrics."""

    __slots__ = (
        "state",
        "connects",
        "disconnects",
        "frames",
        "events",
        "bytes",
        "rejects_by_reason",
        "last_frame_ms",
        "authenticated",
        "acked_topics",
        "topics",
        "subscribe_errors",
        "close_codes",
    )

    def __init__(self) -> None:
        self.state = "idle"
        self.connects = 0
        self.disconnects: Counter[str] = Counter()
        self.frames = 0
        self.events = 0
        self.bytes = 0
        self.rejects_by_reason: Counter[str] = Counter()
        self.last_frame_ms: int | None = None
        self.authenticated = False
        self.acked_topics = 0
        self.topics = 0
        self.subscribe_errors: list[str] = []
        self.close_codes: Counter[int] = Counter()
        """WebSocket close codes seen (received, else sent; 1006 when there was none)."""


class PolygonWebSocketFeed:
    """Keeps one connection to one host and pumps its frames to a handler."""

    def __init__(
        self,
        role: FeedRole,
        host: str,
        api_key: str,
        symbols: SymbolSelection,
        *,
        policy: ReconnectPolicy,
        clock: Clock,
        batch_size: int = 500,
        keep_raw: bool = False,
        max_frame_bytes: int = 16 * 1024 * 1024,
        handshake_timeout_s: float = 15.0,
        open_timeout_s: float = 10.0,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        debug: bool = False,
    ) -> None:
        self.role = role
        self.url = host.rstrip("/") + "/stocks"
        self._api_key = api_key
        self.symbols = symbols
        self._policy = policy
        self._clock = clock
        self._batch = batch_size
        self._keep_raw = keep_raw
        self._max_frame = max_frame_bytes
        self._handshake_timeout = handshake_timeout_s
        self._open_timeout = open_timeout_s
        self._liveness = LivenessPolicy(idle_timeout_s)
        self._debug = debug
        self._decoder = FrameDecoder()
        self._ws: ClientConnection | None = None
        self._fd = -1
        self._stopping = asyncio.Event()
        self.stats = FeedStats()
        self.gate: Callable[[], bool] | None = None
        """Asked before each dial (``HA_ENABLED``: whether this task holds the lease)."""
        self._resume_at = 0.0
        """Monotonic time before which no dial (the backoff or cooldown in progress)."""

    def __repr__(self) -> str:
        return f"<PolygonWebSocketFeed {self.role.value} {self.url} {self.stats.state}>"

    async def run(self, on_frame: FrameHandler) -> None:
        """Connect, pump, reconnect; returns after :meth:`aclose`. A run after
        :meth:`reopen` first waits out what was left of a wait that :meth:`abort` cut short:
        a cooldown after ``max_connections`` or ``auth_failed`` is kept across a fence."""
        policy = self._policy
        left_s = self._resume_at - self._clock.monotonic_s()
        if left_s > 0 and await self._wait(left_s):
            self.stats.state = "closed"
            return
        while not self._stopping.is_set():
            if self.gate is not None and not self.gate():
                break  # not the leader (any more): never dial
            reason = await self._connection(on_frame)
            if self._stopping.is_set():
                break
            self.stats.disconnects[reason.value] += 1
            delay = policy.next_delay(reason, self._clock.monotonic_s())
            level = logging.ERROR if reason in _LOUD else logging.WARNING
            logger.log(
                level,
                "%s feed disconnected (%s); reconnecting in %.1f s (attempt %d)",
                self.role.value,
                reason.value,
                delay,
                policy.attempt,
            )
            self._resume_at = self._clock.monotonic_s() + delay
            if await self._wait(delay):
                break
        self.stats.state = "closed"

    async def _wait(self, delay_s: float) -> bool:
        """Wait ``delay_s`` before the next dial; True if stopped meanwhile."""
        self.stats.state = "waiting"
        try:
            async with asyncio.timeout(delay_s):
                await self._stopping.wait()
        except TimeoutError:
            self._resume_at = 0.0
            return False
        return True

    def input_waiting(self) -> bool:
        """Whether data already waits to be read: frames queued in websockets, or bytes in
        the kernel's receive buffer (``FIONREAD``). The flush loop asks this (once per
        write decision, never per frame) to tell a reader that has caught up from one that
        is behind."""
        ws = self._ws
        if ws is None:
            return False
        # websockets' message assembler (``recv_messages.frames``, websockets 14 to 17):
        # frames already parsed and not yet taken by ``recv``.
        queued = getattr(getattr(ws, "recv_messages", None), "frames", ())
        if len(queued):
            return True
        try:
            waiting = fcntl.ioctl(self._fd, termios.FIONREAD, _FOUR_BYTES)
        except OSError:
            return False
        return waiting != _FOUR_BYTES

    def reopen(self) -> None:
        """Allow :meth:`run` again after :meth:`aclose` or :meth:`abort` (a standby that
        takes the lease again); only once the previous :meth:`run` has returned."""
        self._stopping.clear()

    def abort(self) -> None:
        """Stop reading and drop the connection at once, without a closing handshake
        (fencing: the connection must be gone before the lease could expire)."""
        self._stopping.set()
        ws = self._ws
        if ws is not None:
            ws.transport.abort()

    async def aclose(self) -> None:
        """Stop reading and close the socket."""
        self._stopping.set()
        ws = self._ws
        if ws is not None:
            await ws.close()

    async def _connection(self, on_frame: FrameHandler) -> DisconnectReason:
        """One connection's life; returns why it ended."""
        stats = self.stats
        stats.state = "connecting"
        stats.authenticated = False
        session = FeedSession(
            self._api_key,
            self.role.channels,
            self.symbols,
            self._batch,
            decoder=self._decoder,
            keep_raw=self._keep_raw,
        )
        stats.topics = session.topic_count
        connecting = asyncio.ensure_future(
            connect(
                self.url,
                max_size=self._max_frame,
                compression=None,
                open_timeout=self._open_timeout,
                ping_interval=None,  # the liveness watchdog pings, only when idle
                close_timeout=2,
                max_queue=64,
                logger=_WIRE_LOGGER,
            )
        )
        stopper = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({connecting, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not connecting.done():  # aclose() while dialling a slow host: give up at once
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await connecting
            return DisconnectReason.CLIENT_CLOSED
        try:
            ws = connecting.result()
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            logger.warning("%s feed: cannot connect to %s: %s", self.role.value, self.url, exc)
            return DisconnectReason.CONNECT_FAILED
        if self._stopping.is_set():  # aclose() ran while dialling and saw no socket to close
            await ws.close()
            return DisconnectReason.CLIENT_CLOSED
        self._ws = ws
        sock = ws.transport.get_extra_info("socket")
        self._fd = sock.fileno() if sock is not None else -1
        stats.connects += 1
        stats.state = "connected"
        self._policy.on_connected(self._clock.monotonic_s())
        logger.info("%s feed: connected to %s", self.role.value, self.url)
        watchdog = asyncio.ensure_future(watch_liveness(ws, stats, self._liveness, self._clock))
        try:
            return await self._pump(ws, session, on_frame)
        except ConnectionClosed as exc:
            silent_s = found_silent(watchdog)
            if silent_s is not None:
                return self._silent(session, silent_s)
            code = exc.rcvd.code if exc.rcvd else (exc.sent.code if exc.sent else 1006)
            stats.close_codes[code] += 1
            server_error = exc.rcvd is not None and exc.rcvd.code == 1011
            session.close(DisconnectReason.SERVER_ERROR if server_error else DisconnectReason.DROP)
            logger.info("%s feed: connection closed: %s", self.role.value, exc)
            return session.close_reason or DisconnectReason.DROP
        except TimeoutError:
            logger.error(
                "%s feed: no auth_success within %.0f s", self.role.value, self._handshake_timeout
            )
            return DisconnectReason.HANDSHAKE_TIMEOUT
        except Exception:  # a bug on some input must not end the feed: log it, reconnect
            logger.exception("%s feed: unexpected error; reconnecting", self.role.value)
            session.close(DisconnectReason.DROP)
            return DisconnectReason.DROP
        finally:
            await stop_watchdog(watchdog)
            self._ws = None
            await ws.close()
            if self._stopping.is_set():
                session.close(DisconnectReason.CLIENT_CLOSED)

    def _silent(self, session: FeedSession, silent_s: float) -> DisconnectReason:
        self.stats.close_codes[1006] += 1
        session.close(DisconnectReason.IDLE_TIMEOUT)
        logger.warning(
            "%s feed: nothing received for %.1f s (no frame, no pong); replacing the connection",
            self.role.value,
            silent_s,
        )
        return DisconnectReason.IDLE_TIMEOUT

    async def _pump(
        self, ws: ClientConnection, session: FeedSession, on_frame: FrameHandler
    ) -> DisconnectReason:
        stats = self.stats
        clock = self._clock
        receive = session.receive
        debug = self._debug and logger.isEnabledFor(logging.DEBUG)
        async with asyncio.timeout(self._handshake_timeout) as handshake:
            while True:  # the handshake: statuses drive the session
                data = await ws.recv(decode=False)
                frame = receive(data)
                now_ms = clock.time_ms()
                self._count(frame, len(data), now_ms)
                await self._after_status(ws, session, data, debug)
                if frame.events or frame.rejects or frame.archive:
                    on_frame(frame, now_ms)
                if session.state is SessionState.CLOSED:
                    return session.close_reason or DisconnectReason.DROP
                if session.state in (SessionState.SUBSCRIBING, SessionState.STREAMING):
                    handshake.reschedule(None)
                    break
        stats.authenticated = True
        stats.state = "streaming"
        while True:  # the hot loop
            data = await ws.recv(decode=False)
            frame = receive(data)
            now_ms = clock.time_ms()
            self._count(frame, len(data), now_ms)
            if debug:
                logger.debug(
                    "%s <<< %s",
                    self.role.value,
                    session.redact(bytes(data[:_DEBUG_EXCERPT]).decode("utf-8", "replace")),
                )
            if frame.statuses:
                await self._after_status(ws, session, data, False)
                closed_for = session.close_reason
                if closed_for is not None:
                    on_frame(frame, now_ms)
                    return closed_for
            on_frame(frame, now_ms)

    def _count(self, frame: DecodedFrame, size: int, now_ms: int) -> None:
        """Per-frame figures (once per frame, never per event)."""
        stats = self.stats
        stats.frames += 1
        stats.bytes += size
        stats.last_frame_ms = now_ms
        if frame.events:
            stats.events += len(frame.events)
            self._policy.on_data(self._clock.monotonic_s())
        if frame.rejects:
            for reject in frame.rejects:
                stats.rejects_by_reason[reject.reason.value] += 1

    async def _after_status(
        self, ws: ClientConnection, session: FeedSession, data: bytes | str, debug: bool
    ) -> None:
        """Send what the session queued and log its notices."""
        role = self.role.value
        if debug:
            text = (
                data
                if isinstance(data, str)
                else bytes(data[:_DEBUG_EXCERPT]).decode("utf-8", "replace")
            )
            logger.debug("%s <<< %s", role, session.redact(text[:_DEBUG_EXCERPT]))
        for message in session.data_to_send():
            if self._debug:
                logger.debug("%s >>> %s", role, message.log_text[:_DEBUG_EXCERPT])
            await ws.send(message.data.decode())
        for notice in session.drain_notices():
            logger.log(notice.level, "%s feed: %s", role, notice.text)
        stats = self.stats
        stats.acked_topics = session.acked_count
        stats.subscribe_errors = list(session.errors)


_FOUR_BYTES = bytes(4)
"""``FIONREAD``'s answer buffer; an answer equal to it means 0 bytes waiting."""

_LOUD = frozenset({DisconnectReason.AUTH_FAILED, DisconnectReason.MAX_CONNECTIONS})
