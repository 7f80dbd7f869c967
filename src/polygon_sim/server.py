"""A faithful local Polygon/Massive stocks feed for tests, the demo and the benchmark.

Two WebSocket hosts at path ``/stocks`` (real-time: ``AM`` + ``FMV``; delayed: ``T`` + ``Q``)
speak the handshake and statuses of ``polygon-protocol.md`` §2-§7; the tickers REST
endpoint of §10 is served by :mod:`polygon_sim.rest`. The market is
:mod:`polygon_sim.market`, the fault switches :mod:`polygon_sim.faults`, the
ground truth :mod:`polygon_sim.truth`, and the options
:class:`~polygon_sim.config.SimulatorConfig`. See ``docs/simulator.md``.

::

    async with PolygonSimulator(SimulatorConfig(api_key="k", max_events=10_000)) as sim:
        ...  # connect to f"{sim.realtime_url}/stocks"; await sim.truth.wait_total(10_000)

Run it: ``python -m polygon_sim --port-realtime 8765 --port-delayed 8766
--rest-port 8767 --rate 2000``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import signal
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from http import HTTPStatus
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from polygon_core.subscriptions import FeedRole
from polygon_sim.config import ScriptedEvent, SimulatorConfig, config_from_args, parse_script
from polygon_sim.connection import Connection
from polygon_sim.faults import Faults, StatusKill
from polygon_sim.live import LiveHost, realistic_hosts
from polygon_sim.market import HostMarket
from polygon_sim.rest import RestStats, TickersEndpoint
from polygon_sim.stamps import FrameStamps
from polygon_sim.streamer import Streamer
from polygon_sim.tickers import reference_tickers
from polygon_sim.truth import ConnectionEventKind, Truth
from polygon_sim.wire import status_frame

__all__ = ["PolygonSimulator", "SimulatorConfig", "main"]

logger = logging.getLogger(__name__)
PATH = "/stocks"


class PolygonSimulator:
    """The simulator; start it with ``async with`` or :meth:`start` / :meth:`stop`."""

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        writer: Callable[[Connection], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        """``writer``: each authenticated connection's data writer instead of the market's
        (replay's, :mod:`polygon_sim.replay`)."""
        self.config = config = config or SimulatorConfig()
        self.truth = Truth(track_latest=config.track_latest)
        self.faults = Faults(self._kill, self._wake)
        start_ms = config.synthetic_start_ms
        mix = dict(config.mix)
        self.markets = {
            role: HostMarket(
                role,
                config.symbols,
                seed=config.seed,
                start_ms=start_ms,
                mix=mix,
                fmv_time_unit=config.fmv_time_unit,
            )
            for role in FeedRole
        }
        self.scripts: dict[FeedRole, deque[ScriptedEvent]] | None = None
        if config.script is not None:
            parsed = parse_script(config.script)
            self.scripts = {role: deque(events) for role, events in parsed.items()}
        self.open: dict[FeedRole, dict[int, Connection]] = {role: {} for role in FeedRole}
        """Every open connection per host, by id."""
        self.slots: dict[FeedRole, list[Connection]] = {role: [] for role in FeedRole}
        """Authenticated connections per host, oldest first."""
        self.remaining = config.max_events
        """Events still to deliver under ``max_events`` (``None``: no cap)."""
        self._ids = itertools.count(1)
        self._servers: dict[FeedRole, Server] = {}
        self._ports: dict[FeedRole, int] = {}
        self._rest: TickersEndpoint | None = None
        self._runner: web.AppRunner | None = None
        self._rest_port: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._streamer = Streamer(self)
        self._writer = writer or self._streamer.write_loop
        self.stamps = None if config.frame_log is None else FrameStamps(config.frame_log)
        """Frame numbers and send times for the benchmark (``frame_log``), else ``None``."""
        self.live: dict[FeedRole, LiveHost] | None = None
        """The realistic market's hosts (``market="realistic"``), made at :meth:`start`."""

    # lifecycle

    async def start(self) -> None:
        """Listen on the configured ports (0: any free port)."""
        if self._servers:
            raise RuntimeError("simulator already started")
        config = self.config
        if config.market == "realistic":
            self.live = realistic_hosts(config)
        ports = {FeedRole.REALTIME: config.port_realtime, FeedRole.DELAYED: config.port_delayed}
        try:
            for role, port in ports.items():
                server = await serve(
                    functools.partial(self._serve, role),
                    config.host,
                    port,
                    process_request=_only_stocks_path,
                    compression="deflate" if config.compression else None,
                    write_limit=config.write_limit_bytes,
                    ping_interval=config.ping_interval_s,
                    ping_timeout=config.ping_timeout_s,
                    close_timeout=config.close_timeout_s,
                    server_header="polygon-sink-simulator",
                )
                self._servers[role] = server
                self._ports[role] = server.sockets[0].getsockname()[1]
            if config.rest:
                tickers = reference_tickers(config.symbols, config.extra_tickers)
                self._rest = TickersEndpoint(config.api_key, tickers, self.faults)
                self._runner = web.AppRunner(self._rest.app, access_log=None)
                await self._runner.setup()
                site = web.TCPSite(self._runner, config.host, config.rest_port)
                await site.start()
                self._rest_port = self._runner.addresses[0][1]
        except BaseException:
            await self.stop()
            raise
        logger.info(
            "simulator listening: realtime %s, delayed %s, rest %s",
            self.realtime_url,
            self.delayed_url,
            self._rest_port and self.rest_base,
        )

    async def stop(self) -> None:
        """Close every connection (1001 going away) and stop listening."""
        servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            server.close()
        for server in servers:
            await server.wait_closed()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        if self.stamps is not None:
            self.stamps.write()

    async def __aenter__(self) -> PolygonSimulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # addresses and state

    def url(self, role: FeedRole | str) -> str:
        """``ws://host:port`` of a host, without the ``/stocks`` path."""
        port = self._ports.get(FeedRole(role))
        if port is None:
            raise RuntimeError("simulator not started")
        return f"ws://{self.config.host}:{port}"

    @property
    def realtime_url(self) -> str:
        return self.url(FeedRole.REALTIME)

    @property
    def delayed_url(self) -> str:
        return self.url(FeedRole.DELAYED)

    @property
    def rest_base(self) -> str:
        """``http://host:port`` of the tickers endpoint."""
        if self._rest_port is None:
            raise RuntimeError("REST endpoint not started")
        return f"http://{self.config.host}:{self._rest_port}"

    @property
    def stats(self) -> Truth:
        """Alias of :attr:`truth`."""
        return self.truth

    @property
    def rest_stats(self) -> RestStats:
        if self._rest is None:
            raise RuntimeError("REST endpoint not started")
        return self._rest.stats

    # budget (max_events)

    def take_budget(self, n: int) -> int:
        if self.remaining is None:
            return n
        granted = min(n, self.remaining)
        self.remaining -= granted
        return granted

    def refund_budget(self, n: int) -> None:
        if self.remaining is not None and n:
            self.remaining += n
            self._wake(tuple(FeedRole))

    # connections

    async def _serve(self, role: FeedRole, ws: ServerConnection) -> None:
        conn = Connection(next(self._ids), role, ws, self.truth)
        self.open[role][conn.conn_id] = conn
        try:
            connected = status_frame(self.config.connected_status, "Connected Successfully")
            await ws.send(connected, text=True)
            if await self._streamer.authenticate(conn):
                conn.writer = asyncio.create_task(self._writer(conn))
                async for message in ws:
                    await self._streamer.control(conn, message)
        except ConnectionClosed:
            pass
        finally:
            await self._finish(conn)

    async def _finish(self, conn: Connection) -> None:
        if conn.writer is not None:
            conn.writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await conn.writer
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.close_timeout_s + 1):
                await conn.ws.wait_closed()
        self.open[conn.role].pop(conn.conn_id, None)
        self.release_slot(conn)
        self.truth.closed(conn.record, conn.ws.close_code)

    def claim_slot(self, conn: Connection) -> None:
        """Register an authenticated connection and apply the one-per-host limit."""
        holders = self.slots[conn.role]
        holders.append(conn)
        conn.authenticated = True
        self.truth.authenticated(conn.record)
        while len(holders) > 1:
            loser = holders[0] if self.config.evict == "older" else holders[-1]
            self.kill(loser, 1008, "", StatusKill.MAX_CONNECTIONS)
            self.release_slot(loser)

    def release_slot(self, conn: Connection) -> None:
        if conn.authenticated:
            conn.authenticated = False
            self.slots[conn.role].remove(conn)
            self.truth.deauthenticated(conn.record)

    def kill(
        self, conn: Connection, code: int | None, reason: str, status: StatusKill | None
    ) -> bool:
        """End ``conn``: optionally send ``status``, then close with ``code`` (None: abort)."""
        if conn.closing:
            return False
        conn.closing = True
        conn.record.closed_by_server = True
        self.release_slot(conn)
        kind = ConnectionEventKind.DROPPED
        if status is StatusKill.MAX_CONNECTIONS:
            kind = ConnectionEventKind.EVICTED
        elif status is not None:
            kind = ConnectionEventKind.DISCONNECTED
        self.truth.note(conn.record, kind, code, status.value if status else reason)
        conn.wake.set()
        if status is None and code is None:
            conn.ws.transport.abort()
        else:
            self.spawn(conn.close_with(code, reason, status))
        return True

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _kill(
        self, roles: tuple[FeedRole, ...], code: int | None, reason: str, status: StatusKill | None
    ) -> int:
        return sum(
            self.kill(conn, code, reason, status)
            for role in roles
            for conn in list(self.open[role].values())
        )

    def _wake(self, roles: tuple[FeedRole, ...]) -> None:
        for role in roles:
            for conn in self.open[role].values():
                conn.wake.set()


def _only_stocks_path(connection: ServerConnection, request: Request) -> Response | None:
    if urlsplit(request.path).path == PATH:
        return None
    return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")


async def _serve_forever(config: SimulatorConfig, stats_interval_s: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with PolygonSimulator(config) as sim:
        print(f"realtime (AM, FMV): {sim.realtime_url}/stocks", flush=True)
        print(f"delayed  (T, Q):    {sim.delayed_url}/stocks", flush=True)
        if config.rest:
            print(f"rest:               {sim.rest_base}/v3/reference/tickers", flush=True)
        print("serving; Ctrl-C to stop", flush=True)
        started, last = time.monotonic(), 0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(stats_interval_s or None):
                    await stop.wait()
            if stats_interval_s and not stop.is_set():
                total = sim.truth.total
                rate = (total - last) / stats_interval_s
                print(
                    f"{time.monotonic() - started:8.0f}s delivered {total} events "
                    f"({rate:,.0f}/s) {sim.truth.counts()} "
                    f"connections {[len(c) for c in sim.open.values()]}",
                    flush=True,
                )
                last = total


def main(argv: Sequence[str] | None = None, prog: str = "python -m polygon_sim") -> int:
    """The command line of ``python -m polygon_sim`` and ``polygon-sink simulate``."""
    config, stats_interval_s = config_from_args(argv, prog)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(config, stats_interval_s))
    return 0
