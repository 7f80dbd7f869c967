"""One simulated connection's protocol: handshake, control messages and the data writer.

Per connection the reader task (the websockets handler) answers control messages and a
writer task streams data. Every frame is a JSON array built by joining pre-encoded event
bytes, sent as a text frame with ``await send`` (backpressure: a slow reader slows the
writer; with a rate set, a reader too far behind can get ``slow_consumer``). Paced
(``events_per_second`` > 0) the writer is frame-clocked on a schedule fixed from its start:
it sleeps until ``events_per_frame`` events are due or the oldest has waited
``max_frame_delay_s``, and stamps each event (wall clock) with its due time.

Wire behaviour (``polygon-protocol.md`` §2, §3, §6): the first frame is ``connected``; an
auth frame with the right key gets ``auth_success``, a wrong one ``auth_failed`` and a TCP
close without a close frame; a subscribe before auth gets ``auth_required``; a frame that is
not a JSON object gets ``error``/``Invalid JSON``; topics split at the first dot; a channel
the host does not serve is dropped silently; a topic already held is not answered again;
unsubscribing answers ``unsubscribed to: X``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from typing import Any

from websockets.exceptions import ConnectionClosed

from polygon_core.subscriptions import split_topic
from polygon_sim.config import ScriptedEvent
from polygon_sim.connection import Connection
from polygon_sim.faults import HostFaults, StatusKill
from polygon_sim.host import Host
from polygon_sim.live_writer import stream_live
from polygon_sim.truth import ConnectionEventKind, Latest
from polygon_sim.wire import (
    AUTH_FAILED,
    AUTH_REQUIRED,
    AUTH_SUCCESS,
    AUTH_TIMEOUT,
    GARBAGE,
    INVALID_JSON,
    UNKNOWN_ACTION,
    Event,
    encode,
    parse_request,
    status_element,
    wire_tuple,
)

__all__ = ["Streamer"]

logger = logging.getLogger(__name__)
_HOLD_STATUS_S = 0.005
"""Paced: statuses wait for the next data frame only when it is due within this long."""


class Streamer:
    """The protocol logic of a connection, bound to its simulator (a :class:`Host`)."""

    def __init__(self, sim: Host) -> None:
        self.sim = sim

    async def authenticate(self, conn: Connection) -> bool:
        """Run the handshake; ``True`` once authenticated, ``False`` when closed."""
        sim, ws = self.sim, conn.ws
        timeout = sim.config.auth_timeout_s
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    message = await ws.recv()
            except TimeoutError:
                conn.closing = conn.record.closed_by_server = True
                sim.truth.note(conn.record, ConnectionEventKind.AUTH_TIMEOUT)
                await ws.send(AUTH_TIMEOUT, text=True)
                await ws.close(1000)
                return False
            request = parse_request(message)
            action = None if request is None else request.get("action")
            if request is None:
                await ws.send(INVALID_JSON, text=True)
            elif action == "auth":
                if (
                    request.get("params") == sim.config.api_key
                    and not sim.faults.take_auth_reject()
                ):
                    sim.claim_slot(conn)
                    await ws.send(AUTH_SUCCESS, text=True)
                    return True
                conn.closing = conn.record.closed_by_server = True
                sim.truth.note(conn.record, ConnectionEventKind.AUTH_FAILED)
                await ws.send(AUTH_FAILED, text=True)
                ws.transport.abort()  # no close frame, as observed live
                return False
            elif action in ("subscribe", "unsubscribe"):
                await ws.send(AUTH_REQUIRED, text=True)
            else:
                await ws.send(UNKNOWN_ACTION, text=True)

    async def control(self, conn: Connection, message: str | bytes) -> None:
        """Answer one control message after auth."""
        request = parse_request(message)
        if request is None:
            await conn.ws.send(INVALID_JSON, text=True)
            return
        action, params = request.get("action"), request.get("params")
        if action in ("subscribe", "unsubscribe") and isinstance(params, str):
            await self._subscription(conn, action == "subscribe", params)
        elif action == "auth":
            await conn.ws.send(AUTH_SUCCESS, text=True)
        else:
            await conn.ws.send(UNKNOWN_ACTION, text=True)

    async def _subscription(self, conn: Connection, subscribe: bool, params: str) -> None:
        sim, record = self.sim, conn.record
        channels = sim.markets[conn.role].channels
        record.subscribe_requests += subscribe
        changes: dict[str, tuple[str, str]] = {}
        for item in params.split(","):
            topic = item.strip()
            try:
                channel, symbol = split_topic(topic)
            except ValueError:
                continue
            if channel in channels and not (subscribe and topic in record.topics):
                changes[topic] = (channel, symbol)
        verb = "subscribed to: " if subscribe else "unsubscribed to: "
        acks = [status_element("success", verb + topic) for topic in changes]
        if not subscribe:
            self._apply(conn, changes, add=False)
        if acks and sim.config.ack_style == "frame_per_topic":
            for ack in acks:
                await conn.ws.send(b"[" + ack + b"]", text=True)
        elif acks and subscribe and sim.config.pack_status_with_data:
            conn.pending.extend(acks)
        elif acks:
            await conn.ws.send(b"[" + b",".join(acks) + b"]", text=True)
        if subscribe:
            self._apply(conn, changes, add=True)
        conn.wake.set()

    def _apply(self, conn: Connection, changes: dict[str, tuple[str, str]], add: bool) -> None:
        for topic, (channel, symbol) in changes.items():
            wanted: set[Any] = conn.wildcard if symbol == "*" else conn.explicit
            key = channel if symbol == "*" else (channel, symbol)
            if add:
                conn.record.topics.add(topic)
                wanted.add(key)
            else:
                conn.record.topics.discard(topic)
                wanted.discard(key)
        if self.sim.scripts is None:
            conn.picks = self.sim.markets[conn.role].picks(conn.wildcard, conn.explicit)

    async def write_loop(self, conn: Connection) -> None:
        try:
            await self._stream(conn)
        except ConnectionClosed:
            pass
        except Exception:
            logger.exception("simulator writer failed on connection %d", conn.conn_id)
            await conn.ws.close(1011, "simulator error")

    async def _stream(self, conn: Connection) -> None:
        sim, ws = self.sim, conn.ws
        if sim.live is not None and sim.scripts is None:
            await stream_live(sim, conn, self._take_faults, self._flush)
            return
        market = sim.markets[conn.role]
        channels = market.channels
        host_faults = sim.faults.hosts[conn.role]
        script = None if sim.scripts is None else sim.scripts[conn.role]
        truth, record = sim.truth, conn.record
        epf, rate = sim.config.events_per_frame, sim.config.events_per_second
        max_delay = sim.config.max_frame_delay_s
        lag_limit, buffer_limit = sim.config.slow_consumer_lag_s, sim.config.write_limit_bytes
        loop = asyncio.get_running_loop()
        # Pacing schedule, fixed from its start (no drift): event k (0-based) falls due at
        # started + (k + 1) / rate; ``paced`` events were sent since. ``clock`` maps due
        # times to wall-clock ms (epoch ms at ``started``, ms per event).
        started, paced, clock = -1.0, 0, (0.0, 0.0)
        frames, stamps = 0, sim.stamps
        while not conn.closing:
            if host_faults.armed:
                await self._take_faults(conn, host_faults)
            ready = bool(conn.picks) if script is None else bool(script and record.topics)
            want = epf
            due_at: tuple[float, float] | None = None
            if rate > 0 and ready:
                now = loop.time()
                if started < 0:
                    started, paced = now, 0
                    clock = (time.time() * 1000 - (loop.time() - now) * 1000, 1000 / rate)
                due = int((now - started) * rate) - paced
                if lag_limit is not None and due > rate * lag_limit:
                    sim.kill(conn, 1008, "", StatusKill.SLOW_CONSUMER)
                    return
                if due < epf:
                    # Frame-clocked: wait for a full frame or for the oldest due event to
                    # have waited max_delay, whichever comes first.
                    oldest = started + (paced + 1) / rate
                    deadline = min(started + (paced + epf) / rate, oldest + max_delay)
                    if due <= 0 or now < deadline:
                        wait = max(deadline - now, 0.0)
                        if conn.pending and wait > _HOLD_STATUS_S:
                            await self._flush(conn)  # do not hold statuses for long
                        await conn.rest(wait)
                        continue
                if ws.transport.get_write_buffer_size() >= buffer_limit // 2:
                    await conn.rest(0.005)  # a slow reader: fall behind (and maybe get cut)
                    continue
                want = min(due, epf)
                due_at = (clock[0] + paced * clock[1], clock[1])
            n = sim.take_budget(want) if ready else 0
            if n == 0:
                started = -1.0
                if not await self._flush(conn):
                    await conn.rest(None)
                continue
            parts, conn.pending = conn.pending, []
            counts = [0] * len(channels)
            latest: Latest | None = [] if truth.track_latest else None
            number = 0
            if script is None:
                events: list[Event] = []
                self._fill(conn, n, due_at, events, counts)
                number = stamps.stamp(events) if stamps is not None else 0
                body = encode(events)
                parts.append(body[1:-1])
                if latest is not None:
                    latest.extend(wire_tuple(event) for event in events)
            else:
                taken = self._from_script(conn, script, n, parts, counts, latest)
                sim.refund_budget(n - taken)
                if not parts:
                    continue
            frame = body if len(parts) == 1 and script is None else b"[" + b",".join(parts) + b"]"
            delivered = sum(counts)
            try:
                await ws.send(frame, text=True)
            except ConnectionClosed:
                sim.refund_budget(delivered)
                raise
            if stamps is not None and number:
                stamps.sent(number)
            if delivered:
                truth.delivered(record, channels, counts, len(frame), latest)
            paced += delivered
            frames += 1
            if not frames & 7:  # send() does not yield while the socket takes data
                await asyncio.sleep(0)

    def _from_script(
        self,
        conn: Connection,
        script: deque[ScriptedEvent],
        n: int,
        parts: list[bytes],
        counts: list[int],
        latest: Latest | None,
    ) -> int:
        """Move up to ``n`` scripted events this connection wants into ``parts``."""
        channels, taken = self.sim.markets[conn.role].channels, 0
        while taken < n and script:
            event = script.popleft()
            if conn.wants(event.channel, event.symbol):
                parts.append(event.raw)
                counts[channels.index(event.channel)] += 1
                taken += 1
                if latest is not None:
                    latest.append((event.channel, event.symbol, event.time, event.raw))
        return taken

    def _fill(
        self,
        conn: Connection,
        n: int,
        due_at: tuple[float, float] | None,
        events: list[Event],
        counts: list[int],
    ) -> None:
        """``n`` synthetic events (one of them stale if armed), more when oversize is armed.

        ``due_at`` (paced mode): the wall-clock ms at which the first of the ``n`` events
        fell due and the ms between events; each event's time is its due ms (never later
        than now). ``None``: every event is stamped now."""
        market = self.sim.markets[conn.role]
        now_ms = int(time.time() * 1000)
        if conn.stale:
            stale = market.stale(conn.picks)
            if stale is not None:
                conn.stale -= 1
                counts[stale[0]] += 1
                events.append(stale[1])
                n -= 1
        if due_at is None or market.synthetic:
            market.fill(conn.picks, n, now_ms, events, counts)
        else:
            first, step = due_at
            done = 0
            while done < n:  # one fill per distinct due ms
                ms = int(first + (done + 1) * step)
                upto = min(n, max(done + 1, math.ceil((ms + 1 - first) / step) - 1))
                market.fill(conn.picks, upto - done, min(ms, now_ms), events, counts)
                done = upto
        if conn.oversize:
            target, size = conn.oversize.pop(0), len(encode(events))
            while size < target:
                per_event = max(1.0, size / max(1, len(events)))
                extra = self.sim.take_budget(int((target - size) / per_event) + 1)
                if not extra:
                    break
                chunk: list[Event] = []
                market.fill(conn.picks, extra, now_ms, chunk, counts)
                events.extend(chunk)
                size += len(encode(chunk)) - 1

    async def _take_faults(self, conn: Connection, faults: HostFaults) -> None:
        while faults.garbage:
            kind = faults.garbage.popleft()
            conn.record.garbage += 1
            if kind.whole_frame:
                await conn.ws.send(GARBAGE[kind][0], text=True)
            else:
                conn.pending.extend(GARBAGE[kind])
        conn.oversize.extend(faults.oversize)
        faults.oversize.clear()
        conn.stale += faults.out_of_order
        faults.out_of_order = 0
        faults.rearm()

    async def _flush(self, conn: Connection) -> bool:
        """Send pending statuses or garbage on their own; ``True`` if anything was sent."""
        if not conn.pending:
            return False
        parts, conn.pending = conn.pending, []
        await conn.ws.send(b"[" + b",".join(parts) + b"]", text=True)
        return True
