"""The figures of issue 13's faults, measured with the defaults (docs/reliability.md).

``python -m bench.fault_timings silent`` — the feed adapter (default ``WS_IDLE_TIMEOUT_SEC``,
default backoff) against the simulator through :class:`~bench.soak.proxy.TcpProxy`; 1–3 s
after the connection streams, the proxy stops forwarding both ways on its open
connections; prints the seconds until the new connection streams (and, while streaming,
until its first data), three runs streaming at 2,000 events/s and three in a quiet market.

``python -m bench.fault_timings s3-down`` — the service as a child process with
``S3_ENABLED=true`` and moto's server behind the proxy, either listening or closed
(refused); prints the seconds from exec to the first Redis key and from both feeds'
``subscribed`` log lines to it, alternating S3 down and up, three runs each.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import redis
from aiobotocore.session import get_session

from bench.soak.proxy import TcpProxy
from polygon_adapters.polygon_ws import PolygonWebSocketFeed
from polygon_adapters.runtime import SystemClock
from polygon_adapters.s3_upload import open_s3_client
from polygon_core.backoff import ReconnectPolicy
from polygon_core.codec import DecodedFrame
from polygon_core.subscriptions import FeedRole, SymbolSelection
from polygon_sim.server import PolygonSimulator, SimulatorConfig
from polygon_testing.local_redis import RedisServerProcess, free_port

__all__ = ["main"]

_SUBSCRIBED = re.compile(r"^(\S+ \S+) INFO .*feed: subscribed", re.M)


async def _poll(condition: Callable[[], bool], step_s: float = 0.002) -> None:
    while not condition():  # noqa: ASYNC110 - polling observable state is the point
        await asyncio.sleep(step_s)


async def silent_once(quiet: bool) -> tuple[float, float | None]:
    if quiet:
        config = SimulatorConfig(api_key="k", rest=False, max_events=0)
    else:
        config = SimulatorConfig(api_key="k", rest=False, events_per_second=2000)
    async with PolygonSimulator(config) as sim:
        proxy = TcpProxy(int(sim.delayed_url.rsplit(":", 1)[1]))
        await proxy.up()
        feed = PolygonWebSocketFeed(
            FeedRole.DELAYED,
            f"ws://127.0.0.1:{proxy.port}",
            "k",
            SymbolSelection.of(["*"]),
            policy=ReconnectPolicy(random=random.random),
            clock=SystemClock(),
        )
        data_at: list[float] = []

        def on_frame(frame: DecodedFrame, _ms: int) -> None:
            if frame.events:
                data_at.append(time.monotonic())

        task = asyncio.create_task(feed.run(on_frame))
        await _poll(lambda: feed.stats.state == "streaming" and feed.stats.acked_topics == 2)
        await asyncio.sleep(random.uniform(1, 3))
        proxy.silence()
        silenced = time.monotonic()
        seen = len(data_at)
        await _poll(lambda: feed.stats.connects == 2 and feed.stats.state == "streaming")
        streaming = time.monotonic() - silenced
        first_data = None
        if not quiet:
            await _poll(lambda: len(data_at) > seen and data_at[-1] > silenced + 1)
            first_data = next(t for t in data_at[seen:] if t > silenced + 1) - silenced
        if dict(feed.stats.disconnects) != {"idle_timeout": 1}:
            raise RuntimeError(f"unexpected disconnects {dict(feed.stats.disconnects)}")
        await feed.aclose()
        await task
        await proxy.down()
        return streaming, first_data


async def measure_silent() -> None:
    for quiet in (False, True):
        for run in range(1, 4):
            streaming, data = await silent_once(quiet)
            what = "quiet" if quiet else "streaming"
            more = f", first data after {data:.2f} s" if data is not None else ""
            print(f"{what} run {run}: new connection streaming after {streaming:.2f} s{more}")


def _wait_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


async def s3_down_once(
    moto_port: int, redis_url: str, workdir: Path, down: bool
) -> tuple[float, float]:
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    bucket = f"timings-{random.getrandbits(40):010x}"
    session = get_session()
    session.set_credentials(creds["AWS_ACCESS_KEY_ID"], creds["AWS_SECRET_ACCESS_KEY"])
    url = f"http://127.0.0.1:{moto_port}"
    async with open_s3_client("us-east-1", url, session=session) as client:
        await client.create_bucket(Bucket=bucket)
    proxy = TcpProxy(moto_port)
    await proxy.up()
    if down:
        await proxy.down()
    direct = redis.Redis.from_url(redis_url)
    direct.flushall()
    config = SimulatorConfig(api_key="k", rest=False, events_per_second=1000)
    log = workdir / "service.log"
    async with PolygonSimulator(config) as sim:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("POLYGON_", "REDIS_", "S3_", "AWS_"))
        }
        env.update(creds)
        env.update(
            POLYGON_API_KEY="k", POLYGON_WS_SYMBOLS="*", POLYGON_WS_HOST_REALTIME=sim.realtime_url,
            POLYGON_WS_HOST_DELAYED=sim.delayed_url, REDIS_URL=redis_url, S3_ENABLED="true",
            S3_BUCKET=bucket, AWS_REGION="us-east-1", HEALTH_PORT="0", LOG_FORMAT="text",
            S3_ENDPOINT_URL=f"http://127.0.0.1:{proxy.port}",
        )  # fmt: skip
        started = time.time()
        with log.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "polygon_runner", "run",
                env=env, stderr=err, stdout=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
        await _poll(lambda: bool(direct.dbsize()))
        first_key = time.time()
        await asyncio.sleep(1)
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
    await proxy.down()
    stamps = _SUBSCRIBED.findall(log.read_text())
    subscribed = max(datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f").timestamp() for s in stamps)
    return first_key - started, first_key - subscribed


async def measure_s3_down() -> None:
    with tempfile.TemporaryDirectory(prefix="fault-timings-") as tmp:
        workdir = Path(tmp)
        moto_port = free_port()
        moto = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            await asyncio.to_thread(_wait_port, moto_port, 30.0)
            with RedisServerProcess() as server:
                for down in (True, False) * 3:
                    exec_s, after_s = await s3_down_once(moto_port, server.url, workdir, down)
                    print(
                        f"S3 {'down' if down else 'up'}: first Redis key {exec_s:.2f} s after "
                        f"exec, {after_s * 1000:.0f} ms after both feeds subscribed"
                    )
        finally:
            moto.terminate()
            await moto.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fault_timings")
    parser.add_argument("fault", choices=("silent", "s3-down"))
    args = parser.parse_args(argv)
    asyncio.run(measure_silent() if args.fault == "silent" else measure_s3_down())
    return 0


if __name__ == "__main__":
    sys.exit(main())
