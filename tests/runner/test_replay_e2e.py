"""Replay end to end: the service archives a feed to S3 (moto) and writes Redis A; the
archive is replayed to a second service writing Redis B; every key of B equals A's."""

from __future__ import annotations

import asyncio
import json
import signal

import pytest
import redis
from bench.expected import wire_record_values

from polygon_adapters.runtime import SystemClock
from polygon_adapters.s3_upload import open_s3_client
from polygon_core.events import Channel
from polygon_core.subscriptions import FeedRole
from polygon_sim.config import SimulatorConfig
from polygon_sim.replay import Replay, ReplayOptions
from polygon_sim.replay_layout import TimeRange, plan_reads
from polygon_sim.replay_lines import ReplayEvent
from polygon_sim.replay_source import HostStream, S3Archive
from polygon_sim.server import PolygonSimulator
from tests.helpers import eventually, missing_server
from tests.moto_server import unique_bucket
from tests.redis_servers import RedisServerProcess, redis_server_available
from tests.runner.test_service_e2e import API_KEY, SYMBOLS, start_service

pytestmark = pytest.mark.integration
EVENTS = 20_000
FAMILY = {Channel.AM: "agg1m", Channel.FMV: "fmv", Channel.T: "trade", Channel.Q: "quote"}
TTLS = {f"{name}_TTL_SEC": "600" for name in ("AGG1M", "FMV", "TRADE", "QUOTE")}


@pytest.fixture
def redis_pair():
    if not redis_server_available():
        missing_server("redis-server is not installed")
    with RedisServerProcess() as first, RedisServerProcess() as second:
        yield first, second


def records(url: str) -> dict[str, dict]:
    """Every ``stock:*`` record, without ``updatedAt`` (the time the sink wrote it)."""
    client = redis.Redis.from_url(url)
    out = {}
    for key in client.scan_iter("stock:*"):
        record = json.loads(client.get(key))
        record.pop("updatedAt")
        out[key.decode()] = record
    return out


def values(url: str) -> dict[str, list]:
    return {key: list(record.values()) for key, record in records(url).items()}


def service_env(realtime: str, delayed: str, rest: str, redis_url: str) -> dict[str, str]:
    return {
        "POLYGON_API_KEY": API_KEY,
        "POLYGON_WS_SYMBOLS": "AAPL",
        "POLYGON_WS_HOST_REALTIME": realtime,
        "POLYGON_WS_HOST_DELAYED": delayed,
        "POLYGON_REST_BASE": rest,
        "POLYGON_SUBSCRIBE_BATCH": "2",
        "REDIS_URL": redis_url,
        "HEALTH_PORT": "0",
        **TTLS,
    }


async def stop(proc: asyncio.subprocess.Process) -> int:
    proc.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(proc.wait(), timeout=30)


async def test_an_archive_replays_into_an_equal_redis(redis_pair, s3, tmp_path) -> None:
    first, second = redis_pair
    bucket = unique_bucket("replay-e2e")
    async with open_s3_client(s3.region, s3.endpoint_url, session=s3.aio_session()) as client:
        await client.create_bucket(Bucket=bucket)
    # 1. The service sinks a feed into Redis A and archives it to S3.
    config = SimulatorConfig(api_key=API_KEY, symbols=SYMBOLS, max_events=EVENTS)
    async with PolygonSimulator(config) as sim:
        env = service_env(sim.realtime_url, sim.delayed_url, sim.rest_base, first.url)
        env |= {"S3_ENABLED": "true", "S3_BUCKET": bucket, "S3_PREFIX": "polygon/raw"}
        env |= {"S3_HOSTNAME": "recorder", **s3.env()}
        proc = await start_service(env, tmp_path / "recorder.log")
        try:
            await sim.truth.wait_total(EVENTS, timeout_s=30)
            await asyncio.sleep(1.0)  # the last flush
        finally:
            assert await stop(proc) == 0, (tmp_path / "recorder.log").read_text()[-3000:]
    recorded = records(first.url)
    assert len(recorded) == 4 * len(SYMBOLS)
    # 2. The archive, replayed as fast as read, into a second service and Redis B.
    options = ReplayOptions(symbols=SYMBOLS, speed=0, settle_s=0.3)
    async with (
        open_s3_client(s3.region, s3.endpoint_url, session=s3.aio_session()) as client,
        Replay(S3Archive(client, bucket, "polygon/raw"), options, SystemClock(), config) as replay,
    ):
        server = replay.server
        env = service_env(server.realtime_url, server.delayed_url, server.rest_base, second.url)
        proc = await start_service(env, tmp_path / "replayed.log")
        try:
            await asyncio.wait_for(replay.wait_done(), timeout=60)
            assert replay.writer is not None
            assert sum(replay.writer.sent.values()) == EVENTS
            assert sum(replay.writer.not_subscribed.values()) == 0
            await eventually(lambda: records(second.url) == recorded, within_s=15)
        finally:
            assert await stop(proc) == 0, (tmp_path / "replayed.log").read_text()[-3000:]
        # 3. The first half of the recording (by ingest time), into a flushed Redis B: every
        # key holds the newest event of that half, as read from the archive.
        archive = S3Archive(client, bucket, "polygon/raw")
        every = await archived(archive, TimeRange())
        middle = sorted(e.ingest_ms for e in every)[len(every) // 2]
        half = TimeRange(None, middle)
        expected = newest_records(await archived(archive, half))
        assert expected != newest_records(every)  # the half differs from the whole
        redis.Redis.from_url(second.url).flushall()
        options = ReplayOptions(time_range=half, speed=0, settle_s=0.3)
        async with Replay(archive, options, SystemClock(), config) as replay:
            server = replay.server
            env = service_env(server.realtime_url, server.delayed_url, server.rest_base, second.url)
            env["POLYGON_WS_SYMBOLS"] = "*"
            proc = await start_service(env, tmp_path / "half.log")
            try:
                await asyncio.wait_for(replay.wait_done(), timeout=60)
                await eventually(lambda: values(second.url) == expected, within_s=15)
            finally:
                assert await stop(proc) == 0, (tmp_path / "half.log").read_text()[-3000:]


async def archived(archive: S3Archive, span: TimeRange) -> list[ReplayEvent]:
    """Every archived event in ``span``, both hosts, read with replay's own reader."""
    plan = plan_reads(await archive.list_objects(tuple(Channel), span), None, span)
    events: list[ReplayEvent] = []
    for role in FeedRole:
        stream = HostStream(archive, plan[role], tuple(Channel), span)
        while await stream.peek() is not None:
            events += stream.take(float("inf"), 10_000)
        await stream.aclose()
    return events


def newest_records(events: list[ReplayEvent]) -> dict[str, list]:
    """Key -> the record values (``updatedAt`` aside) of its newest event (ties: the later)."""
    newest: dict[str, tuple[int, list]] = {}
    for event in events:
        wire = json.loads(event.raw)
        when = wire["s" if event.channel is Channel.AM else "t"]
        key = f"stock:{FAMILY[event.channel]}:{event.symbol}"
        if key not in newest or when >= newest[key][0]:
            newest[key] = (when, wire_record_values(event.channel.value, wire))
    return {key: values for key, (_when, values) in newest.items()}
