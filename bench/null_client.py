"""A do-nothing feed client: measures how fast the simulator can push (the feed ceiling).

``python -m bench.null_client URL... --events N`` connects to each host URL, does the
handshake (connected, auth, subscribe to every channel with ``<CH>.*``) and counts the
events of each frame without decoding it (``bytes.count``), until ``N`` events arrived in
total. It prints one JSON line: events, seconds from the first data frame to the last, and
its own CPU seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence

from websockets.asyncio.client import connect

CHANNELS = {"realtime": ("AM", "FMV"), "delayed": ("T", "Q")}


async def _read(url: str, channels: Sequence[str], key: str, state: dict[str, float]) -> None:
    async with connect(f"{url}/stocks", max_size=None, compression=None) as ws:
        await ws.recv()  # connected
        await ws.send(json.dumps({"action": "auth", "params": key}))
        await ws.recv()  # auth_success
        params = ",".join(f"{c}.*" for c in channels)
        await ws.send(json.dumps({"action": "subscribe", "params": params}))
        while state["events"] < state["target"]:
            frame = await ws.recv(decode=False)
            n = frame.count(b'{"ev":"') - frame.count(b'"ev":"status"')
            if n:
                if not state["first"]:
                    state["first"] = time.monotonic()
                state["events"] += n
                state["last"] = time.monotonic()


async def _main(args: argparse.Namespace) -> None:
    state = {"events": 0.0, "target": float(args.events), "first": 0.0, "last": 0.0}
    key = os.environ.get("SIMULATOR_API_KEY", "demo")
    readers = [
        asyncio.create_task(_read(url, CHANNELS[role], key, state))
        for role, url in zip(args.roles, args.urls, strict=True)
    ]
    while state["events"] < state["target"]:
        done = [r for r in readers if r.done()]
        if done and all(r.done() for r in readers):
            break
        await asyncio.sleep(0.01)
    for reader in readers:
        reader.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    times = os.times()
    print(
        json.dumps(
            {
                "events": int(state["events"]),
                "seconds": state["last"] - state["first"],
                "cpu_s": times.user + times.system,
            }
        ),
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.null_client")
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--roles", nargs="+", required=True, choices=sorted(CHANNELS))
    parser.add_argument("--urls", nargs="+", required=True)
    args = parser.parse_args(argv)
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
