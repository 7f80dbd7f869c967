"""The plain comparator: the naive sink every figure of the benchmark is compared with.

``python -m bench.comparator --realtime URL --delayed URL --redis-url URL`` connects to each
host like the sink (``connected`` -> auth -> one subscribe frame for every symbol of
``$BENCH_SYMBOLS``), decodes each frame with the standard library's :mod:`json`, maps each
event to its SPEC §2 record and, per event, awaits one ``SET key value EX ttl`` through
``redis.asyncio``. No conflation, no batching, no pipelining. On SIGTERM it prints
``{"events": N}`` (data events received) and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from websockets.asyncio.client import connect

CHANNELS = {"realtime": ("AM", "FMV"), "delayed": ("T", "Q")}
PREFIX = {"AM": "stock:agg1m:", "FMV": "stock:fmv:", "T": "stock:trade:", "Q": "stock:quote:"}
TTL = {"AM": 120, "FMV": 60, "T": 60, "Q": 60}


def _iso_now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def to_record(event: dict[str, Any], updated_at: str) -> dict[str, Any] | None:
    """SPEC §2's record for one wire event (``None`` for statuses and unknown events)."""
    ev, sym = event.get("ev"), event.get("sym")
    if ev == "Q":
        return {
            "symbol": sym, "bid": event["bp"], "bidSize": event["bs"], "ask": event["ap"],
            "askSize": event["as"], "ts": event["t"], "updatedAt": updated_at,
        }  # fmt: skip
    if ev == "T":
        return {
            "symbol": sym, "price": event["p"], "ts": event["t"], "size": event["s"],
            "conditions": event.get("c", []), "updatedAt": updated_at,
        }  # fmt: skip
    if ev == "AM":
        return {
            "symbol": sym, "start": event["s"], "end": event["e"], "open": event["o"],
            "high": event["h"], "low": event["l"], "close": event["c"], "volume": event["v"],
            "vwap": event["vw"], "updatedAt": updated_at,
        }  # fmt: skip
    if ev == "FMV":
        return {"symbol": sym, "price": event["fmv"], "ts": event["t"], "updatedAt": updated_at}
    return None


async def _host(
    url: str,
    channels: Sequence[str],
    symbols: Sequence[str],
    store: aioredis.Redis,
    count: list[int],
) -> None:
    key = os.environ.get("SIMULATOR_API_KEY", "demo")
    async with connect(f"{url}/stocks", max_size=None, compression=None) as ws:
        await ws.recv()  # connected
        await ws.send(json.dumps({"action": "auth", "params": key}))
        reply = json.loads(await ws.recv())
        if reply[0].get("status") != "auth_success":
            raise RuntimeError(f"auth failed: {reply}")
        topics = ",".join(f"{c}.{s}" for s in symbols for c in channels)
        await ws.send(json.dumps({"action": "subscribe", "params": topics}))
        async for frame in ws:
            updated_at = _iso_now()
            for event in json.loads(frame):
                record = to_record(event, updated_at)
                if record is None:
                    continue
                ev = event["ev"]
                await store.set(PREFIX[ev] + event["sym"], json.dumps(record), ex=TTL[ev])
                count[0] += 1


async def _main(args: argparse.Namespace) -> int:
    symbols = [s for s in os.environ.get("BENCH_SYMBOLS", "").split(",") if s]
    store = aioredis.Redis.from_url(args.redis_url)
    count = [0]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [
        asyncio.create_task(_host(url, CHANNELS[role], symbols, store, count))
        for role, url in (("realtime", args.realtime), ("delayed", args.delayed))
    ]
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait([*tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
    failed = [t for t in tasks if t.done() and t.exception() is not None]
    for task in [*tasks, waiter]:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*tasks, waiter, return_exceptions=True)
    await store.aclose()
    print(json.dumps({"events": count[0]}), flush=True)
    for task in failed:
        print(f"comparator: {task.exception()!r}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.comparator")
    parser.add_argument("--realtime", required=True, help="ws://host:port of the AM/FMV host")
    parser.add_argument("--delayed", required=True, help="ws://host:port of the T/Q host")
    parser.add_argument("--redis-url", required=True)
    return asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
