"""The reference writer: the latency floor on this machine (a benchmark tool, not the product).

``python -m bench.reference --realtime URL --delayed URL --redis-url URL`` connects to each
host like the sink (``connected`` -> auth -> one subscribe frame for every symbol of
``$BENCH_SYMBOLS``) and, for every frame, right after reading it: decodes it with msgspec
(the core's :class:`~polygon_core.codec.FrameDecoder`, built once), maps each event to its
record (:func:`~polygon_core.mappers.encode_record`) and writes one hand-built RESP
``SET key value EX ttl`` per event to its Redis connection (``transport.write``: no await,
no conflation, no timers; a separate task reads and counts the replies). Nothing can reach
Redis sooner from a Python process, so every latency row of the benchmark is also shown as
a ratio to this one, measured in the same run. On SIGTERM it prints ``{"events": N,
"replies": M}`` and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

from websockets.asyncio.client import connect

from polygon_core.codec import FrameDecoder
from polygon_core.events import Channel
from polygon_core.keys import KEY_PREFIXES, TtlPolicy
from polygon_core.mappers import encode_record
from polygon_core.timestamps import iso_ms

CHANNELS = {"realtime": ("AM", "FMV"), "delayed": ("T", "Q")}
_TTL = TtlPolicy()
_TAIL = {c: b"\r\n$2\r\nEX\r\n$%d\r\n%d\r\n" % (len(str(t)), t) for c in Channel
         for t in [_TTL.for_channel(c)]}  # fmt: skip


class _Replies(asyncio.Protocol):
    """Counts ``+OK`` replies (every reply of a pipelined SET is one line)."""

    def __init__(self) -> None:
        self.count = 0
        self.errors = 0
        self.lost = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.count += data.count(b"\r\n")
        self.errors += data.count(b"-ERR") + data.count(b"-OOM")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


async def _redis(url: str) -> tuple[asyncio.Transport, _Replies]:
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(
        _Replies, parts.hostname or "127.0.0.1", parts.port or 6379
    )
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return transport, protocol


async def _host(
    url: str, channels: Sequence[str], symbols: Sequence[str], redis_url: str, count: list[int]
) -> None:
    key = os.environ.get("SIMULATOR_API_KEY", "demo")
    transport, replies = await _redis(redis_url)
    decode = FrameDecoder().decode
    write = transport.write
    try:
        async with connect(f"{url}/stocks", max_size=None, compression=None) as ws:
            await ws.recv()  # connected
            await ws.send(json.dumps({"action": "auth", "params": key}))
            reply = json.loads(await ws.recv())
            if reply[0].get("status") != "auth_success":
                raise RuntimeError(f"auth failed: {reply}")
            topics = ",".join(f"{c}.{s}" for s in symbols for c in channels)
            await ws.send(json.dumps({"action": "subscribe", "params": topics}))
            while True:
                data = await ws.recv(decode=False)
                events = decode(data).events
                if not events:
                    continue
                updated_at = iso_ms(time.time_ns() // 1_000_000)
                parts = []
                for event in events:
                    name = (KEY_PREFIXES[event.channel] + event.symbol).encode()
                    body = encode_record(event, updated_at)
                    parts.append(
                        b"*5\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$%d\r\n%b%b"
                        % (len(name), name, len(body), body, _TAIL[event.channel])
                    )
                write(b"".join(parts))
                count[0] += len(events)
    finally:
        transport.close()
        count[1] += replies.count


async def _main(args: argparse.Namespace) -> int:
    symbols = [s for s in os.environ.get("BENCH_SYMBOLS", "").split(",") if s]
    count = [0, 0]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [
        asyncio.create_task(_host(url, CHANNELS[role], symbols, args.redis_url, count))
        for role, url in (("realtime", args.realtime), ("delayed", args.delayed))
    ]
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait([*tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
    failed = [t for t in tasks if t.done() and t.exception() is not None]
    for task in [*tasks, waiter]:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*tasks, waiter, return_exceptions=True)
    print(json.dumps({"events": count[0], "replies": count[1]}), flush=True)
    for task in failed:
        print(f"reference: {task.exception()!r}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reference")
    parser.add_argument("--realtime", required=True, help="ws://host:port of the AM/FMV host")
    parser.add_argument("--delayed", required=True, help="ws://host:port of the T/Q host")
    parser.add_argument("--redis-url", required=True)
    return asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
