"""End to end, as a subprocess over real sockets: ``python -m polygon_runner`` against the
simulator, a real ``redis-server`` and moto's S3 server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import redis
from bench.expected import wire_record_values

from polygon_adapters.s3_upload import open_s3_client
from polygon_sim.config import SimulatorConfig
from polygon_sim.server import PolygonSimulator
from tests.helpers import eventually
from tests.moto_server import unique_bucket
from tests.redis_servers import free_port

pytestmark = pytest.mark.integration
API_KEY = "e2e-key-5e1f9c"
SYMBOLS = ("AAPL", "BRK.B", "AMpB", "MSFT", "TSLA", "BACpB")
EVENTS = 20_000
FIELDS = {
    "agg1m": [
        "symbol",
        "start",
        "end",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "vwap",
        "updatedAt",
    ],
    "fmv": ["symbol", "price", "ts", "updatedAt"],
    "trade": ["symbol", "price", "ts", "size", "conditions", "updatedAt"],
    "quote": ["symbol", "bid", "bidSize", "ask", "askSize", "ts", "updatedAt"],
}
KEY_OF = {"AM": "agg1m", "FMV": "fmv", "T": "trade", "Q": "quote"}
TTL = {"agg1m": 120, "fmv": 45, "trade": 60, "quote": 30}


def delivered_latest(sim: PolygonSimulator) -> dict:
    """(channel, symbol) -> the newest event the simulator delivered."""
    return {key: event for host in sim.truth.hosts.values() for key, event in host.latest.items()}


async def start_service(env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("POLYGON_", "REDIS_", "S3_", "AWS_"))
    }
    with log.open("wb") as stderr:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "polygon_runner",
            "run",
            env={**base, **env},
            cwd=log.parent,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
        )


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


def metric(text: str, name: str) -> dict[str, float]:
    """``{labels: value}`` for one metric family in Prometheus text."""
    values = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            head, value = line.rsplit(" ", 1)
            values[head[len(name) :]] = float(value)
    return values


async def test_service_end_to_end_with_sigterm(own_redis_server, s3, tmp_path) -> None:
    bucket = unique_bucket("e2e")
    async with open_s3_client(s3.region, s3.endpoint_url, session=s3.aio_session()) as client:
        await client.create_bucket(Bucket=bucket)
    config = SimulatorConfig(
        api_key=API_KEY, symbols=SYMBOLS, max_events=EVENTS, track_latest=True, events_per_frame=50
    )
    health_port = free_port()
    log = tmp_path / "service.log"
    async with PolygonSimulator(config) as sim:
        env = {
            "POLYGON_API_KEY": API_KEY,
            "POLYGON_WS_SYMBOLS": "AAPL,BRK.B",
            "POLYGON_WS_HOST_REALTIME": sim.realtime_url,
            "POLYGON_WS_HOST_DELAYED": sim.delayed_url,
            "POLYGON_REST_BASE": sim.rest_base,
            "REDIS_URL": own_redis_server.url,
            "FMV_TTL_SEC": "45",
            "QUOTE_TTL_SEC": "30",
            "HEALTH_PORT": str(health_port),
            "WS_HEALTH_INTERVAL_SEC": "1",
            "S3_ENABLED": "true",
            "S3_BUCKET": bucket,
            "S3_PREFIX": "polygon/raw",
            "S3_HOSTNAME": "e2e-host",
            **s3.env(),
        }
        proc = await start_service(env, log)
        try:
            await sim.truth.wait_total(EVENTS, timeout_s=30)
            status = 0
            for _ in range(200):
                try:
                    status, body = await get(f"http://127.0.0.1:{health_port}/healthz")
                except aiohttp.ClientError:
                    status = 0
                if status == 200:
                    break
                await asyncio.sleep(0.05)
            assert status == 200, body
            direct = redis.Redis.from_url(own_redis_server.url)

            def all_latest_written() -> bool:
                for (channel, symbol), event in delivered_latest(sim).items():
                    raw = direct.get(f"stock:{KEY_OF[channel]}:{symbol}")
                    if raw is None or json.loads(raw)[FIELDS[KEY_OF[channel]][2]] is None:
                        return False
                    record = json.loads(raw)
                    if list(record.values())[:-1] != wire_record_values(
                        channel, json.loads(event.raw)
                    ):
                        return False
                return True

            await eventually(all_latest_written, within_s=15)
            for (channel, symbol), _event in delivered_latest(sim).items():
                key = f"stock:{KEY_OF[channel]}:{symbol}"
                record = json.loads(direct.get(key))
                assert list(record) == FIELDS[KEY_OF[channel]], key
                assert record["updatedAt"].endswith("Z") and len(record["updatedAt"]) == 24
                ttl = TTL[KEY_OF[channel]]
                assert ttl - 5 < direct.ttl(key) <= ttl, key
            families = {k.decode().split(":")[1] for k in direct.scan_iter("stock:*")}
            assert families == {"agg1m", "fmv", "trade", "quote"}

            _, text = await get(f"http://127.0.0.1:{health_port}/metrics")
            events = metric(text, "polygon_events_total")
            counts = sim.truth.counts()
            assert {k: int(v) for k, v in events.items()} == {
                f'{{channel="{c}"}}': n for c, n in counts.items()
            }
            assert sum(events.values()) == EVENTS
            assert metric(text, "polygon_feed_up") == {
                '{feed="realtime"}': 1.0,
                '{feed="delayed"}': 1.0,
            }

            def health_lines() -> list[dict]:
                return [
                    json.loads(ln)["health"]
                    for ln in log.read_text().splitlines()
                    if '"msg":"health"' in ln
                ]

            # a health line once every event is in (the first may come before: the archive
            # recovers in the background while the feeds already stream)
            await eventually(
                lambda: any(sum(h["events"].values()) == EVENTS for h in health_lines()),
                within_s=5,
            )
            health = health_lines()[-1]
            assert set(health["feeds"]) == {"realtime", "delayed"}
            assert sum(health["events"].values()) == EVENTS and "lag_ms" in health
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), timeout=30)
            assert code == 0, log.read_text()[-3000:]
            assert time.monotonic() - started < 20
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    # The archive: every event delivered, per channel, in completed objects; nothing open.
    async with open_s3_client(s3.region, s3.endpoint_url, session=s3.aio_session()) as client:
        listed = await client.list_objects_v2(Bucket=bucket, Prefix="polygon/raw/")
        keys = [o["Key"] for o in listed.get("Contents", [])]
        assert keys and not [k for k in keys if k.endswith("uploading.marker")]
        lines: dict[str, int] = {}
        for key in keys:
            assert "/e2e-host-seq=" in key
            body = await (await client.get_object(Bucket=bucket, Key=key))["Body"].read()
            for line in body.splitlines():
                item = json.loads(line)
                lines[item["channel"]] = lines.get(item["channel"], 0) + 1
        assert lines == counts
        uploads = await client.list_multipart_uploads(Bucket=bucket)
        assert not uploads.get("Uploads")
    assert API_KEY not in log.read_text()


async def test_bad_configuration_exits_2_naming_each_variable(tmp_path) -> None:
    log = tmp_path / "bad.log"
    env = {
        "POLYGON_API_KEY": API_KEY,
        "POLYGON_WS_SYMBOLS": "AAPL",
        "POLYGON_WS_HOST_REALTIME": "http://x",
        "REDIS_URL": "nope://",
        "AGG1M_TTL_SEC": "-1",
    }
    proc = await start_service(env, log)
    assert await asyncio.wait_for(proc.wait(), timeout=30) == 2
    text = log.read_text()
    for name in (
        "POLYGON_WS_HOST_REALTIME",
        "POLYGON_WS_HOST_DELAYED",
        "REDIS_URL",
        "AGG1M_TTL_SEC",
    ):
        assert name in text
    assert API_KEY not in text
