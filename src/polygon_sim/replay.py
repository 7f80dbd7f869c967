"""Replay of recorded archives over the simulator's two-host protocol.

:class:`Replay` lists an archive (:mod:`.replay_source`), plans each host's reads
(:mod:`.replay_layout`) and serves them with the simulator's server: the same handshake,
statuses, one-connection-per-host rule and tickers REST endpoint; only the data writer of
each connection is :class:`ReplayWriter` instead of the market's.

A connection's stream starts once it has subscribed and its subscriptions settled
(:class:`~.replay_pacing.SettlePolicy`); it then sends its host's events in recorded order,
paced by the :class:`~.replay_pacing.ReplayPacer` both hosts share, each event once, to the
connection that holds the host's slot, if it subscribed to the event's topic (else the
event is counted in ``not_subscribed``, as the live feed would not send it). Events of a
frame that could not be sent are put back, so a client that reconnects gets them; events
sent before a drop are not sent again. When both hosts' streams are over, ``done`` is set;
the hosts stay up (idle, answering pings) until stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from types import TracebackType

from websockets.exceptions import ConnectionClosed

from polygon_core.events import Channel
from polygon_core.ports import Clock
from polygon_core.subscriptions import FeedRole
from polygon_core.timestamps import iso_ms
from polygon_sim.config import SimulatorConfig
from polygon_sim.connection import Connection
from polygon_sim.replay_layout import TimeRange, plan_reads
from polygon_sim.replay_pacing import ReplayPacer, SettlePolicy
from polygon_sim.replay_source import Archive, HostStream
from polygon_sim.server import PolygonSimulator
from polygon_sim.truth import Truth

__all__ = ["Replay", "ReplayOptions", "ReplayWriter"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """What to replay and how fast."""

    channels: tuple[Channel, ...] = tuple(Channel)
    time_range: TimeRange = TimeRange()
    symbols: tuple[str, ...] | None = None
    """Only these symbols (``None``: all); the tickers endpoint lists them."""
    speed: float = 1.0
    """1: recorded pace; N: N times faster; 0: as fast as the client reads."""
    settle_s: float = 0.5
    events_per_frame: int = 100


class ReplayWriter:
    """The data writer of a replay connection (see the module docstring)."""

    def __init__(
        self,
        streams: Mapping[FeedRole, HostStream],
        pacer: ReplayPacer,
        clock: Clock,
        *,
        settle_s: float,
        events_per_frame: int,
    ) -> None:
        self.streams = streams
        self.pacer = pacer
        self.clock = clock
        self.settle_s = settle_s
        self.events_per_frame = events_per_frame
        self.sent = dict.fromkeys(FeedRole, 0)
        self.not_subscribed = dict.fromkeys(FeedRole, 0)
        self.finished: dict[FeedRole, asyncio.Event] = {r: asyncio.Event() for r in FeedRole}
        self.truth: Truth | None = None
        """The server's truth, where sent frames are counted (set once the server exists)."""
        self._locks = {role: asyncio.Lock() for role in FeedRole}

    async def write_loop(self, conn: Connection) -> None:
        try:
            await self._stream(conn)
        except ConnectionClosed:
            pass

    async def _stream(self, conn: Connection) -> None:
        role, clock, pacer, truth = conn.role, self.clock, self.pacer, self.truth
        assert truth is not None, "ReplayWriter.truth not set"
        stream, lock = self.streams[role], self._locks[role]
        channels = tuple(c.value for c in role.channels)
        settle, seen = SettlePolicy(self.settle_s), 0
        record, ws = conn.record, conn.ws
        while not conn.closing:
            now = clock.monotonic_s()
            if record.subscribe_requests != seen:
                seen = record.subscribe_requests
                settle.subscribed(now)
            wait = settle.wait_s(now)
            if wait is None or wait > 0:
                await conn.rest(wait)
                continue
            async with lock:
                if conn.closing:
                    return
                head = await stream.peek()
                if head is None:
                    self._finish(role)
                    wait = None
                else:
                    now = clock.monotonic_s()
                    wait = pacer.wait_s(head.ingest_ms, now)
                if wait == 0:
                    batch = stream.take(pacer.due_until_ms(now), self.events_per_frame)
                    wanted = [e for e in batch if conn.wants(e.channel, e.symbol or "")]
                    self.not_subscribed[role] += len(batch) - len(wanted)
                    if wanted:
                        frame = b"[" + b",".join([e.raw for e in wanted]) + b"]"
                        try:
                            await ws.send(frame, text=True)
                        except ConnectionClosed:
                            stream.unread(batch)
                            raise
                        counts = [0] * len(channels)
                        for event in wanted:
                            counts[channels.index(event.channel.value)] += 1
                        truth.delivered(record, channels, counts, len(frame), None)
                        self.sent[role] += len(wanted)
                    await asyncio.sleep(0)  # send() does not yield while the socket takes data
                    continue
            await conn.rest(wait)

    async def check_empty(self, role: FeedRole) -> None:
        """Mark a host done at once when its stream has nothing to send (no client needed)."""
        async with self._locks[role]:
            if await self.streams[role].peek() is None:
                self._finish(role)

    def _finish(self, role: FeedRole) -> None:
        if not self.finished[role].is_set():
            self.finished[role].set()
            counts = self.streams[role].counts
            logger.info(
                "replay: %s host done: %d events sent, %d not subscribed, %d lines read "
                "from %d objects, %d unusable",
                role.value,
                self.sent[role],
                self.not_subscribed[role],
                counts.lines,
                counts.objects,
                counts.rejected,
            )


class Replay:
    """An archive served on two WebSocket hosts; ``async with`` or :meth:`start`/:meth:`stop`.

    ``config`` gives the server's options (key, host, ports, REST); its market is unused.
    """

    def __init__(
        self,
        archive: Archive,
        options: ReplayOptions,
        clock: Clock,
        config: SimulatorConfig | None = None,
    ) -> None:
        config = config or SimulatorConfig()
        self.archive = archive
        self.options = options
        # Acks go out at once: the replay writer never sends statuses along with data.
        self.config = replace(
            config,
            symbols=options.symbols or (),
            script=None,
            market="flat",
            pack_status_with_data=False,
        )
        self.clock = clock
        self.streams: dict[FeedRole, HostStream] = {}
        self.writer: ReplayWriter | None = None
        self.sim: PolygonSimulator | None = None
        self.objects = 0
        self._checks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        options = self.options
        channels, span = options.channels, options.time_range
        listed = await self.archive.list_objects(channels, span)
        self.objects = len(listed)
        plan = plan_reads(listed, channels, span)
        symbols: Collection[str] | None = options.symbols
        self.streams = {
            role: HostStream(self.archive, plan[role], channels, span, symbols) for role in FeedRole
        }
        for stream in self.streams.values():
            stream.start()  # read ahead while the client connects
        self.writer = writer = ReplayWriter(
            self.streams,
            ReplayPacer(options.speed),
            self.clock,
            settle_s=options.settle_s,
            events_per_frame=options.events_per_frame,
        )
        self.sim = PolygonSimulator(self.config, writer=writer.write_loop)
        writer.truth = self.sim.truth
        self._checks = [asyncio.create_task(writer.check_empty(role)) for role in FeedRole]
        await self.sim.start()
        logger.info("replay: %d objects to read, %s", len(listed), _describe(options))

    async def stop(self) -> None:
        for task in self._checks:
            task.cancel()
        await asyncio.gather(*self._checks, return_exceptions=True)
        if self.sim is not None:
            await self.sim.stop()
        for stream in self.streams.values():
            await stream.aclose()

    async def wait_done(self) -> None:
        """Until both hosts' streams are over."""
        assert self.writer is not None, "replay not started"
        await asyncio.gather(*(e.wait() for e in self.writer.finished.values()))

    @property
    def done(self) -> bool:
        return self.writer is not None and all(e.is_set() for e in self.writer.finished.values())

    @property
    def server(self) -> PolygonSimulator:
        """The server (its ``realtime_url``, ``delayed_url``, ``rest_base``, ``truth``)."""
        if self.sim is None:
            raise RuntimeError("replay not started")
        return self.sim

    async def __aenter__(self) -> Replay:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def _describe(options: ReplayOptions) -> str:
    pace = "as fast as read" if options.speed == 0 else f"{options.speed:g}x recorded pace"
    span = options.time_range
    start = "-" if span.start_ms is None else iso_ms(span.start_ms)
    end = "-" if span.end_ms is None else iso_ms(span.end_ms)
    channels = ",".join(c.value for c in options.channels)
    return f"channels {channels}, ingest time [{start}, {end}), {pace}"
