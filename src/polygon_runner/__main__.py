"""``python -m polygon_runner`` / ``polygon-sink``: the service's command line.

Subcommands: ``run`` (the default: the service, configured by the environment),
``check-redis``, ``demo`` (everything on one machine with a live view), ``simulate`` (the
local Polygon simulator), ``replay`` (an archive served like the simulator) and
``athena-ddl``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from polygon_adapters.redis_store import redact_url
from polygon_core.errors import ArchiveMisconfigured, PolygonIngestError
from polygon_runner import athena
from polygon_runner.check_redis import check_store
from polygon_runner.container import Container, store_for
from polygon_runner.logs import configure_logging
from polygon_runner.service import Service
from polygon_runner.settings import Settings, SettingsError, load_settings, load_store_settings

logger = logging.getLogger("polygon_runner")


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
        try:
            await _maybe_await(container.init_resources())
            service = await _maybe_await(container.service())
        except PolygonIngestError:
            raise
        except Exception:
            # Said before the resources close (the archive's close may wait for S3): why
            # a start failed is the first thing an operator reads, not the last.
            logger.critical("cannot start: unexpected error", exc_info=True)
            return 1
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
    except ArchiveMisconfigured as exc:
        logger.critical("cannot start: the S3 archive is misconfigured: %s", exc)
        return 2
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
    # Fewer, larger young-generation collections: the hot path allocates short-lived
    # frames and events by the hundred thousand per second (see docs/performance.md).
    gc.set_threshold(50_000, 20, 100)
    # What start-up made (modules, classes, settings) lives as long as the process: keep it
    # out of every later collection (the service collects in full every 15 s).
    gc.collect()
    gc.freeze()
    return asyncio.run(_serve(settings))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="polygon-sink",
        description="Sink the Polygon/Massive stocks feed (AM, FMV, T, Q) into Redis.",
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="run the service (the default): settings from the environment")
    sub.add_parser(
        "demo",
        help="run everything locally: simulator + redis-server + the service, with a live view",
        add_help=False,
    )
    sub.add_parser("simulate", help="run the local Polygon simulator", add_help=False)
    sub.add_parser(
        "replay",
        help="serve an archive (S3 or a local folder) over the simulator's two hosts",
        add_help=False,
    )
    sub.add_parser("athena-ddl", help="print the Athena DDL for a bucket/prefix", add_help=False)
    sub.add_parser(
        "check-redis",
        help="write stock:test (TTL 60 s) to REDIS_URL (and REDIS_TOKEN) and read it back",
    )
    args, rest = parser.parse_known_args(argv)
    # The tools are imported only when asked for: the service's own start loads none of
    # the simulator, replay or test-double modules.
    if args.command == "demo":
        from polygon_runner import demo

        return demo.main(rest)
    if args.command == "simulate":
        from polygon_sim import server as simulator

        return simulator.main(rest, prog="polygon-sink simulate")
    if args.command == "replay":
        from polygon_sim import replay_cli

        return replay_cli.main(rest)
    if args.command == "athena-ddl":
        return athena.main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "check-redis":
        return asyncio.run(_check_redis())
    if args.command in (None, "run"):
        return _run()
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
