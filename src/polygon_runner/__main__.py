"""``python -m polygon_runner`` / ``polygon-sink``: the service's command line.

The service itself (``run``), the Redis check, the simulator and the live demo are being
assembled (see the open issues); ``demo`` currently shows the pure core at work on a few
sample frames: decode, latest-wins conflation, records and archive lines.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from polygon_adapters.redis_store import redact_url
from polygon_core.codec import archive_line, decode_frame
from polygon_core.conflation import ConflationBuffer
from polygon_core.errors import PolygonIngestError
from polygon_core.events import MarketEvent, event_time
from polygon_core.keys import KEY_PREFIXES, TtlPolicy
from polygon_core.mappers import to_latest_value
from polygon_core.timestamps import iso_ms
from polygon_runner.check_redis import check_store
from polygon_runner.container import Container, store_for
from polygon_runner.logs import configure_logging
from polygon_runner.service import Service
from polygon_runner.settings import Settings, SettingsError, load_settings, load_store_settings

logger = logging.getLogger("polygon_runner")

SAMPLE_FRAMES = (
    b'[{"ev":"status","status":"connected","message":"Connected Successfully"}]',
    b'[{"ev":"T","sym":"AAPL","p":192.34,"s":100,"t":1715097600000,"c":[12]},'
    b'{"ev":"Q","sym":"BRK.B","bp":412,"bs":2,"ap":412.1,"as":3,"t":1715097600001}]',
    b'[{"ev":"T","sym":"AAPL","p":192.35,"s":50,"t":1715097600005},'
    b'{"ev":"T","sym":"AAPL","p":191.00,"s":10,"t":1715097599000},'
    b'{"ev":"FMV","sym":"AMpB","fmv":24.51,"t":1715097600002},'
    b'{"ev":"LULD","T":"MSFT"},{"ev":"Q","sym":"MSFT","bp":"oops"}]',
    b"garbage, not JSON",
    b'[{"ev":"AM","sym":"AAPL","v":21834,"vw":192.1,"o":191.9,"c":192.3,"h":192.7,"l":191.8,'
    b'"s":1715097600000,"e":1715097660000,"a":150.2}]',
)


def _core_demo() -> int:
    buffer: ConflationBuffer[MarketEvent] = ConflationBuffer()
    now_ms = int(time.time() * 1000)
    stamp = iso_ms(now_ms).encode()
    print("polygon-sink core demo (the full service demo arrives with the runner)\n")
    for data in SAMPLE_FRAMES:
        frame = decode_frame(data, keep_raw=True)
        print(f"frame {data[:60]!r}...")
        for status in frame.statuses:
            print(f"  status   {status.status}: {status.message}")
        for reject in frame.rejects:
            print(f"  reject   {reject.reason}: {reject.detail}")
        for channel, symbol, raw in frame.archive:
            print(f"  archive  {archive_line(channel, symbol, stamp, raw).decode().rstrip()}")
        for event in frame.events:
            buffer.offer(KEY_PREFIXES[event.channel] + event.symbol, event_time(event), event)
    print(f"\nlate events dropped: {buffer.late_dropped}, writes saved: {buffer.superseded}")
    print("records a flush would write now:")
    for _key, _t, event in buffer.drain():
        value = to_latest_value(event, iso_ms(now_ms), TtlPolicy())
        print(f"  SET {value.key} {value.value.decode()} EX {value.ttl_s}")
    return 0


async def _check_redis() -> int:
    try:
        url, token = load_store_settings(os.environ, Path(".env"))
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        store = store_for(url, token)
        try:
            ok, message = await check_store(store, redact_url(url))
        finally:
            await store.aclose()
    except (ValueError, PolygonIngestError) as exc:
        ok, message = False, f"FAILED: {redact_url(url)}: {exc}"
    print(message, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def _secrets(settings: Settings) -> list[str]:
    password = urlsplit(settings.redis_url).password or ""
    return [settings.polygon_api_key, settings.redis_token, password]


async def _serve(settings: Settings) -> int:
    container = Container(settings=settings)
    try:
        await _maybe_await(container.init_resources())
        service = await _maybe_await(container.service())
        assert isinstance(service, Service)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, service.request_stop)
        logger.info(
            "polygon-sink starting: realtime %s, delayed %s, store %s (%s), archive %s",
            settings.ws_host_realtime,
            settings.ws_host_delayed,
            settings.redis_url_redacted,
            settings.store_backend,
            f"s3://{settings.s3_bucket}/{settings.s3_prefix}" if settings.s3_enabled else "off",
        )
        return await service.run()
    except PolygonIngestError as exc:
        logger.critical("cannot start: %s", exc)
        return 1
    finally:
        await _maybe_await(container.shutdown_resources())


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _run() -> int:
    try:
        settings = load_settings(os.environ, Path(".env"))
    except SettingsError as exc:
        print(f"polygon-sink: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format, _secrets(settings))
    return asyncio.run(_serve(settings))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="polygon-sink",
        description="Sink the Polygon/Massive stocks feed (AM, FMV, T, Q) into Redis.",
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="run the service (the default): settings from the environment")
    sub.add_parser("demo", help="show the pipeline on local defaults (no account, no cloud)")
    sub.add_parser(
        "check-redis",
        help="write stock:test (TTL 60 s) to REDIS_URL (and REDIS_TOKEN) and read it back",
    )
    args = parser.parse_args(argv)
    if args.command == "check-redis":
        return asyncio.run(_check_redis())
    if args.command in (None, "run"):
        return _run()
    if args.command == "demo":
        return _core_demo()
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
