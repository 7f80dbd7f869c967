"""``polygon-sink replay``: serve an archive (S3 or a local folder) on two WebSocket hosts.

See ``docs/replay.md``. S3 is reached with the service's variables (``AWS_REGION``,
``S3_ENDPOINT_URL``, the standard credential chain); the API key clients must send is
``--api-key`` or ``SIMULATOR_API_KEY`` / ``POLYGON_API_KEY`` (default ``demo``), never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from polygon_adapters.runtime import SystemClock
from polygon_adapters.s3_upload import open_s3_client
from polygon_core.events import Channel
from polygon_sim.config import SimulatorConfig
from polygon_sim.replay import Replay, ReplayOptions
from polygon_sim.replay_layout import TimeRange, parse_time_ms
from polygon_sim.replay_source import Archive, FolderArchive, S3Archive

__all__ = ["main", "parse_args"]


def _channels(text: str) -> tuple[Channel, ...]:
    names = [c.strip().upper() for c in text.split(",") if c.strip()]
    unknown = [n for n in names if n not in Channel.__members__]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"channels are AM, FMV, T, Q (got {text!r})")
    return tuple(dict.fromkeys(Channel(n) for n in names))


def _time(text: str) -> int:
    try:
        return parse_time_ms(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _speed(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"speed is a number >= 0 (0: as fast as read): {text!r}")
    return value


def parse_args(
    argv: Sequence[str] | None, prog: str
) -> tuple[str, ReplayOptions, SimulatorConfig, argparse.Namespace]:
    """The command line -> (source, replay options, server options, the rest)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve archived NDJSON (this service's S3 layout, from S3 or a local folder "
        "of downloaded objects, gzipped or not) over the simulator's two WebSocket hosts, at "
        "recorded pace, N times faster or as fast as read. Point the service's "
        "POLYGON_WS_HOST_REALTIME / POLYGON_WS_HOST_DELAYED at the printed URLs.",
    )
    add = parser.add_argument
    add("source", help="s3://bucket/prefix, a folder of downloaded objects, or one object file")
    add("--from", dest="start", type=_time, help="first ingest time (ISO-8601, UTC; or epoch ms)")
    add("--to", dest="end", type=_time, help="end of the range (exclusive), same forms")
    add("--channels", type=_channels, default=tuple(Channel), help="e.g. T,Q (default: all)")
    add("--symbols", default=None, help="only these symbols (comma-separated); REST lists them")
    add("--speed", type=_speed, default=1.0, help="1: recorded pace (default), N: N times faster")
    add("--fast", action="store_true", help="as fast as the client reads (same as --speed 0)")
    add("--settle", type=float, default=0.5, help="s without subscribe before a stream starts")
    add("--events-per-frame", type=int, default=100, help="most events in one frame")
    add("--exit-when-done", action="store_true", help="stop once everything was sent")
    add("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    add("--port-realtime", type=int, default=0, help="AM+FMV host port (0: any free port)")
    add("--port-delayed", type=int, default=0, help="T+Q host port (0: any free port)")
    add("--rest-port", type=int, default=0, help="tickers REST port (0: any free port)")
    add("--no-rest", action="store_true", help="do not serve the tickers REST endpoint")
    add("--api-key", default=None, help="the key clients must send")
    add("--region", default=None, help="S3 region (default AWS_REGION)")
    add("--endpoint-url", default=None, help="S3 endpoint (default S3_ENDPOINT_URL; AWS)")
    add("--stats-interval", type=float, default=10.0, help="print totals every N s (0: never)")
    args = parser.parse_args(argv)
    if args.events_per_frame < 1 or args.settle < 0:
        parser.error("--events-per-frame must be >= 1 and --settle >= 0")
    try:
        span = TimeRange(args.start, args.end)
    except ValueError as exc:
        parser.error(f"--from/--to: {exc}")
    symbols = None
    if args.symbols:
        symbols = tuple(dict.fromkeys(s.strip() for s in args.symbols.split(",") if s.strip()))
    options = ReplayOptions(
        channels=args.channels,
        time_range=span,
        symbols=symbols,
        speed=0.0 if args.fast else args.speed,
        settle_s=args.settle,
        events_per_frame=args.events_per_frame,
    )
    key = args.api_key or os.environ.get("SIMULATOR_API_KEY") or os.environ.get("POLYGON_API_KEY")
    config = SimulatorConfig(
        api_key=key or "demo",
        host=args.host,
        port_realtime=args.port_realtime,
        port_delayed=args.port_delayed,
        rest_port=args.rest_port,
        rest=not args.no_rest,
    )
    return args.source, options, config, args


@contextlib.asynccontextmanager
async def open_archive(
    source: str, region: str | None = None, endpoint_url: str | None = None
) -> AsyncIterator[Archive]:
    """The archive a source names: ``s3://bucket/prefix`` (a client opened and closed here)
    or a local path."""
    if not source.startswith("s3://"):
        yield FolderArchive(Path(source))
        return
    bucket, _, prefix = source[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {source!r}")
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    endpoint_url = endpoint_url or os.environ.get("S3_ENDPOINT_URL")
    async with open_s3_client(region, endpoint_url) as client:
        yield S3Archive(client, bucket, prefix)


async def _serve(
    source: str, options: ReplayOptions, config: SimulatorConfig, args: argparse.Namespace
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with (
        open_archive(source, args.region, args.endpoint_url) as archive,
        Replay(archive, options, SystemClock(), config) as replay,
    ):
        server = replay.server
        print(f"realtime (AM, FMV): {server.realtime_url}/stocks", flush=True)
        print(f"delayed  (T, Q):    {server.delayed_url}/stocks", flush=True)
        if config.rest:
            print(f"rest:               {server.rest_base}/v3/reference/tickers", flush=True)
        print(f"replaying {replay.objects} objects; Ctrl-C to stop", flush=True)
        started, announced = time.monotonic(), False
        done = asyncio.ensure_future(replay.wait_done())
        stopped = asyncio.ensure_future(stop.wait())
        interval = args.stats_interval or None
        try:
            while True:
                waiting = {stopped} if announced else {stopped, done}
                finished, _ = await asyncio.wait(
                    waiting, timeout=interval, return_when=asyncio.FIRST_COMPLETED
                )
                if stopped in finished:
                    break
                if done in finished and not announced:
                    announced = True
                    print(_progress(replay, time.monotonic() - started), flush=True)
                    print("replay done", flush=True)
                    if not _complete(replay):
                        print("some objects were not read to their end: see the log", flush=True)
                    if args.exit_when_done:
                        break
                elif interval:
                    print(_progress(replay, time.monotonic() - started), flush=True)
        finally:
            for task in (done, stopped):
                task.cancel()
    return 0 if _complete(replay) else 1


def _complete(replay: Replay) -> bool:
    """Whether every planned object was read to its end."""
    counts = [stream.counts for stream in replay.streams.values()]
    return not any(c.failed or c.bad_objects for c in counts)


def _progress(replay: Replay, elapsed_s: float) -> str:
    writer = replay.writer
    assert writer is not None
    sent = sum(writer.sent.values())
    per_host = ", ".join(f"{role.value} {n}" for role, n in writer.sent.items())
    skipped = sum(writer.not_subscribed.values())
    rejected = sum(s.counts.rejected for s in replay.streams.values())
    return (
        f"{elapsed_s:8.0f}s sent {sent} events ({per_host}), "
        f"{skipped} not subscribed, {rejected} unusable lines"
    )


def main(argv: Sequence[str] | None = None, prog: str = "polygon-sink replay") -> int:
    source, options, config, args = parse_args(argv, prog)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(_serve(source, options, config, args))
    except (FileNotFoundError, ValueError, BotoCoreError, ClientError) as exc:
        print(f"{prog}: {exc}", flush=True)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(prog="python -m polygon_sim.replay_cli"))
