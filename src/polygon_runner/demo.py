"""``python -m polygon_runner demo``: the whole pipeline on one machine, no account, no cloud.

Starts the Polygon simulator and a throwaway ``redis-server`` (or uses ``REDIS_URL``), runs
the real service against them in this process, and redraws a live view every second:
events/s per channel, lag, Redis writes, conflation, reconnects, rejects, and a few
symbols' keys read back from Redis. Ctrl-C stops everything cleanly. The service's own logs
go to a file (its path is shown).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import redis.asyncio as aioredis

from polygon_runner.container import Container
from polygon_runner.logs import configure_logging
from polygon_runner.service import Service
from polygon_runner.settings import load_settings
from polygon_sim.config import SimulatorConfig
from polygon_sim.server import PolygonSimulator
from polygon_sim.session import SESSIONS
from polygon_testing.local_redis import RedisServerProcess, redis_server_available

__all__ = ["main"]

DEMO_KEY = "demo-key"
WATCHED = ("AAPL", "BRK.B", "MSFT")
_CLEAR = "\x1b[H\x1b[2J"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="polygon-sink demo", description=__doc__)
    p.add_argument(
        "--market",
        choices=["realistic", "flat"],
        default="realistic",
        help="realistic (default): a market that looks like the real one; flat: every "
        "symbol alike at --rate events/s per host (0: flat out)",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=0,
        help="realistic: trades+quotes/s at midday (0: 2000); flat: events/s per host (0: 20000)",
    )
    p.add_argument(
        "--session",
        choices=[*SESSIONS, "now"],
        default="open",
        help="realistic: the session to start in (now: New York's time)",
    )
    p.add_argument("--speed", type=float, default=1.0, help="realistic: sessions N times faster")
    p.add_argument("--duration", type=float, default=0, help="stop after N seconds (0: Ctrl-C)")
    p.add_argument("--no-clear", action="store_true", help="print views one after another")
    p.add_argument("--s3", action="store_true", help="archive to a local moto S3 server too")
    return p


async def _demo(args: argparse.Namespace) -> int:
    log_path = Path(tempfile.gettempdir()) / f"polygon-sink-demo-{os.getpid()}.log"
    redis_proc: RedisServerProcess | None = None
    redis_url = os.environ.get("REDIS_URL", "")
    if not redis_url:
        if not redis_server_available():
            print("demo: no redis-server found; install it or set REDIS_URL", file=sys.stderr)
            return 1
        redis_proc = RedisServerProcess().start()
        redis_url = redis_proc.url
    sim = PolygonSimulator(
        SimulatorConfig(
            api_key=DEMO_KEY,
            market=args.market,
            events_per_second=args.rate or (20_000 if args.market == "flat" else 0),
            events_per_frame=50,
            session=args.session,
            session_speed=args.speed,
        )
    )
    await sim.start()
    env = {
        "POLYGON_API_KEY": DEMO_KEY,
        "POLYGON_WS_SYMBOLS": ",".join(WATCHED),
        "POLYGON_WS_HOST_REALTIME": sim.realtime_url,
        "POLYGON_WS_HOST_DELAYED": sim.delayed_url,
        "POLYGON_REST_BASE": sim.rest_base,
        "REDIS_URL": redis_url,
        "HEALTH_PORT": "0",
        "WS_HEALTH_INTERVAL_SEC": "10",
        "BACKOFF_INITIAL_MS": "200",
        "SHUTDOWN_TIMEOUT_SEC": "10",
        "LOG_FORMAT": "text",
    }
    settings = load_settings(env)
    file_handler = logging.FileHandler(log_path)
    configure_logging("INFO", "text", [DEMO_KEY])
    root = logging.getLogger()
    file_handler.setFormatter(root.handlers[0].formatter)
    for f in root.handlers[0].filters:
        file_handler.addFilter(f)
    root.handlers[:] = [file_handler]
    container = Container(settings=settings)
    reader = aioredis.Redis.from_url(redis_url)
    code = 0
    try:
        await container.init_resources()  # type: ignore[misc]
        service = await container.service()  # type: ignore[misc]
        assert isinstance(service, Service)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, service.request_stop)
        runner = asyncio.create_task(service.run())
        view = LiveView(service, reader, sim, redis_url, log_path, clear=not args.no_clear)
        started = time.monotonic()
        while not runner.done():
            await asyncio.wait({runner}, timeout=1.0)
            if not runner.done():
                await view.draw()
            if args.duration and time.monotonic() - started >= args.duration:
                service.request_stop()
        code = runner.result()
        print(f"\nstopped cleanly (exit {code}); service log: {log_path}")
    finally:
        await reader.aclose()
        await container.shutdown_resources()  # type: ignore[misc]
        await sim.stop()
        if redis_proc is not None:
            redis_proc.stop()
    return code


class LiveView:
    """One screen of figures, computed from the service's counters and Redis itself."""

    def __init__(
        self,
        service: Service,
        reader: aioredis.Redis,
        sim: PolygonSimulator,
        redis_url: str,
        log_path: Path,
        *,
        clear: bool,
    ) -> None:
        self.service = service
        self.reader = reader
        self.sim = sim
        self.redis_url = redis_url
        self.log_path = log_path
        self.clear = clear
        self._last = time.monotonic()
        self._last_events: dict[str, int] = {}
        self._last_writes = 0

    async def draw(self) -> None:
        report = self.service.report
        snap = report.snapshot()
        now = time.monotonic()
        dt = max(now - self._last, 1e-9)
        events: dict[str, int] = snap["events"]
        rates = {c: (n - self._last_events.get(c, 0)) / dt for c, n in events.items()}
        writes = snap["writes"]
        write_rate = (writes - self._last_writes) / dt
        self._last, self._last_events, self._last_writes = now, dict(events), writes
        lines = [
            "polygon-sink demo  (simulator -> 2 WebSockets -> service -> Redis)   Ctrl-C stops",
            f"redis: {self.redis_url}   log: {self.log_path}",
            "",
            f"{'channel':<8}{'events/s':>12}{'total':>12}{'lag ms':>10}",
        ]
        for channel, rate in rates.items():
            lag = snap["lag_ms"].get(channel)
            lag_text = "-" if lag is None else f"{lag:.0f}"
            lines.append(f"{channel:<8}{rate:>12,.0f}{events[channel]:>12,}{lag_text:>10}")
        total_events = sum(events.values())
        saved = snap["conflated"]
        lines += [
            "",
            f"redis writes/s {write_rate:,.0f}   total {writes:,}   "
            f"saved by conflation {saved:,} ({100 * saved / max(total_events, 1):.0f}%)",
            f"late dropped {snap['late_dropped']:,}   rejects {sum(snap['rejects'].values()):,}   "
            f"pending keys {snap['pending_keys']}   store outage {snap['store_outage']}",
        ]
        for name, feed in snap["feeds"].items():
            reconnects = max(feed["connects"] - 1, 0)
            lines.append(
                f"{name:<9} feed {feed['state']:<10} connects {feed['connects']}  "
                f"reconnects {reconnects}  topics {feed['acked_topics']}/{feed['topics']}"
            )
        lines.append("")
        for symbol in WATCHED:
            for prefix in ("quote", "trade"):
                key = f"stock:{prefix}:{symbol}"
                value = await self.reader.get(key)
                ttl = await self.reader.ttl(key)
                shown = value.decode()[:110] if isinstance(value, bytes) else "(not yet)"
                lines.append(f"{key:<20} ttl {ttl:>3}  {shown}")
        text = "\n".join(lines)
        print((_CLEAR if self.clear else "\n") + text, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_demo(args))
    return 130
