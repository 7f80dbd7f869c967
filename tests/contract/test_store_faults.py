"""Fault tests for the write path: real Redis stopped and restarted, a misbehaving Upstash
server, and wrong credentials."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time

import pytest
import redis.asyncio as aioredis

from polygon_adapters.redis_store import RedisLatestStore
from polygon_adapters.runtime import AsyncioScheduler, SystemClock
from polygon_adapters.upstash_store import UpstashLatestStore
from polygon_core.codec import decode_frame
from polygon_core.errors import StoreRejected, StoreUnavailable
from polygon_core.ingest import Ingest
from polygon_core.ports import LatestValue
from polygon_testing.upstash_server import UpstashServer
from tests.helpers import eventually, missing_server
from tests.redis_servers import RedisServerProcess, redis_server_available
from tests.strategies import dumps

pytestmark = pytest.mark.integration
SYMBOLS = [f"S{i}" for i in range(50)]
TOKEN = "fault-token-7f3a"


@pytest.fixture
def private_redis():
    if not redis_server_available():
        missing_server("redis-server is not installed")
    with RedisServerProcess() as server:
        yield server


def quote_frame(t: int, rng: random.Random) -> bytes:
    sym = rng.choice(SYMBOLS)
    return dumps([{"ev": "Q", "sym": sym, "bp": t, "bs": 1, "ap": t + 1, "as": 1, "t": t}])


async def test_redis_stopped_mid_stream_then_restarted(private_redis) -> None:
    store = RedisLatestStore.from_url(private_redis.url, connect_timeout_s=0.2, timeout_s=0.5)
    ingest = Ingest(store, SystemClock(), AsyncioScheduler(), retry_initial_s=0.02, retry_max_s=0.2)
    flusher = asyncio.create_task(ingest.run_flush_loop())
    direct = aioredis.Redis.from_url(private_redis.url, socket_timeout=0.2)
    rng = random.Random(7)
    newest: dict[str, int] = {}
    seen: dict[str, int] = {}
    rollbacks: list[str] = []
    stop = asyncio.Event()

    async def watch() -> None:  # samples keys while everything happens
        while not stop.is_set():
            try:
                for sym in SYMBOLS[:10]:
                    raw = await direct.get(f"stock:quote:{sym}")
                    if raw is not None:
                        ts = json.loads(raw)["ts"]
                        if ts < seen.get(sym, -1):
                            rollbacks.append(f"{sym}: {seen[sym]} -> {ts}")
                        seen[sym] = ts
            except (OSError, aioredis.RedisError):
                seen.clear()  # the restarted server starts empty; a gap is not a rollback
            await asyncio.sleep(0.005)

    def produce(start: int, count: int) -> int:
        t = start
        for _ in range(count):
            t += 1
            frame = decode_frame(quote_frame(t, rng))
            ingest.on_frame(frame, 0)
            newest[frame.events[0].symbol] = t
        return t

    watcher = asyncio.create_task(watch())
    t = produce(0, 2000)
    await eventually(lambda: ingest.stats.values_written > 0 and len(ingest.buffer) == 0)
    await asyncio.to_thread(private_redis.stop, keep_dir=True)
    for _ in range(20):  # the reader keeps going during the outage
        t = produce(t, 200)
        await asyncio.sleep(0.01)
    for sym in SYMBOLS:  # every key's newest value arrives while Redis is down
        t += 1
        ingest.on_frame(
            decode_frame(
                dumps([{"ev": "Q", "sym": sym, "bp": t, "bs": 1, "ap": 1, "as": 1, "t": t}])
            ),
            0,
        )
        newest[sym] = t
    await eventually(lambda: ingest.stats.in_outage)
    assert len(ingest.buffer) == len(SYMBOLS)  # bounded by keys, nothing dropped
    await asyncio.to_thread(private_redis.start)
    await eventually(lambda: not ingest.stats.in_outage and len(ingest.buffer) == 0, within_s=10)
    stop.set()
    await watcher
    for sym, ts in newest.items():
        raw = await direct.get(f"stock:quote:{sym}")
        assert raw is not None and json.loads(raw)["ts"] == ts, sym
        assert 58 <= await direct.ttl(f"stock:quote:{sym}") <= 60
    assert rollbacks == []
    assert ingest.stats.outages == 1 and ingest.buffer.late_dropped == 0
    ingest.stop()
    await flusher
    await direct.aclose()
    await store.aclose()


async def test_a_stalled_redis_times_out_the_batch_then_writes_resume(private_redis) -> None:
    """SIGSTOP: the batch's replies never come; it fails within the socket timeout as
    StoreUnavailable (not a hang), and after SIGCONT writes go through again."""
    store = RedisLatestStore.from_url(private_redis.url, connect_timeout_s=0.2, timeout_s=0.3)
    await store.put_many([LatestValue("stock:trade:ST", b'{"v":1}', 60)])
    pid = private_redis.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(
                store.put_many([LatestValue("stock:trade:ST", b'{"v":2}', 60)]), 10.0
            )
        assert time.monotonic() - started < 3.0
    finally:
        os.kill(pid, signal.SIGCONT)
    await store.put_many([LatestValue("stock:trade:ST", b'{"v":3}', 60)])
    assert await store.read("stock:trade:ST") == b'{"v":3}'
    await store.aclose()


async def test_wrong_redis_password_is_fatal_and_not_logged(private_redis, caplog) -> None:
    admin = aioredis.Redis.from_url(private_redis.url)
    await admin.config_set("requirepass", "right-secret")
    await admin.aclose()
    url = private_redis.url.replace("redis://", "redis://:wrong-secret@")
    store = RedisLatestStore.from_url(url)
    assert "wrong-secret" not in store.description
    with pytest.raises(StoreRejected) as info:
        await store.put_many([LatestValue("stock:trade:X", b"{}", 5)])
    assert "wrong-secret" not in str(info.value) and "wrong-secret" not in caplog.text
    await store.aclose()


@pytest.fixture
async def upstash(redis_server):
    server = UpstashServer(redis_server.url.rsplit("/", 1)[0] + "/3", TOKEN)
    base = await server.start()
    yield server, base
    await server.stop()


async def test_upstash_transient_errors_are_retried(upstash) -> None:
    server, base = upstash
    store = UpstashLatestStore(base, TOKEN, attempts=4, backoff_initial_s=0.01)
    for fault in (
        lambda: server.faults.fail_next(429),
        lambda: server.faults.fail_next(500),
        lambda: server.faults.fail_next(502),  # HTML body
        lambda: server.faults.non_json_next(),
        lambda: server.faults.fail_next(503, times=3),
    ):
        fault()
        await store.put_many([LatestValue("stock:fmv:RT", b'{"v":1}', 60)])
        assert await store.read("stock:fmv:RT") == b'{"v":1}'
    await store.aclose()


async def test_upstash_drop_after_execute_is_safe_to_retry(upstash) -> None:
    server, base = upstash
    store = UpstashLatestStore(base, TOKEN, attempts=3, backoff_initial_s=0.01)
    server.faults.drop_after_execute_next()
    await store.put_many([LatestValue("stock:fmv:DROP", b'{"v":2}', 60)])
    assert await store.read("stock:fmv:DROP") == b'{"v":2}'
    assert server.stats.by_command["SET"] == 2  # executed twice, same result
    await store.aclose()


async def test_upstash_outage_then_recovery_through_the_flush_loop(upstash, caplog) -> None:
    server, base = upstash
    store = UpstashLatestStore(base, TOKEN, attempts=1)
    ingest = Ingest(
        store, SystemClock(), AsyncioScheduler(), retry_initial_s=0.01, retry_max_s=0.05
    )
    flusher = asyncio.create_task(ingest.run_flush_loop())
    server.faults.fail_next(500, times=5)
    ingest.on_frame(decode_frame(dumps([{"ev": "FMV", "sym": "UP", "fmv": 3, "t": 9}])), 0)
    await eventually(lambda: ingest.stats.values_written == 1, within_s=10)
    assert ingest.stats.failed_flushes == 5 and ingest.stats.outages == 1
    assert json.loads(await store.read("stock:fmv:UP") or b"null")["price"] == 3
    ingest.stop()
    await flusher
    await store.aclose()


async def test_upstash_wrong_token_is_a_clear_fatal_error(upstash, caplog) -> None:
    _server, base = upstash
    store = UpstashLatestStore(base, "not-the-token-123")
    with pytest.raises(StoreRejected, match="REDIS_TOKEN") as info:
        await store.put_many([LatestValue("stock:fmv:X", b"{}", 60)])
    assert "not-the-token-123" not in str(info.value) + repr(store) + caplog.text
    await store.aclose()


async def test_upstash_gives_up_after_its_attempts(upstash) -> None:
    server, base = upstash
    store = UpstashLatestStore(base, TOKEN, attempts=2, backoff_initial_s=0.01)
    server.faults.fail_next(429, times=2)
    with pytest.raises(StoreUnavailable, match="429"):
        await store.put_many([LatestValue("stock:fmv:X", b"{}", 60)])
    await store.aclose()


def test_upstash_url_rules() -> None:
    with pytest.raises(ValueError, match="https"):
        UpstashLatestStore("http://example.upstash.io", TOKEN)
    with pytest.raises(ValueError, match="REDIS_TOKEN"):
        UpstashLatestStore("https://example.upstash.io", "")
    with pytest.raises(ValueError, match="credentials"):
        UpstashLatestStore("https://user:pw@example.upstash.io", TOKEN)
    UpstashLatestStore("http://127.0.0.1:8079", TOKEN)  # loopback test servers are fine
    UpstashLatestStore("http://[::1]:8079/", TOKEN)


@pytest.mark.parametrize("portable", [False, True], ids=["hiredis-fast-path", "portable-path"])
async def test_redis_error_replies_are_surfaced_and_the_connection_stays_usable(
    private_redis, monkeypatch, portable
) -> None:
    """An OOM reply in the middle of a batch: counted, raised as StoreUnavailable, and the
    replies after it are still read (the next batch works on the same pool)."""
    import polygon_adapters.redis_wire as module

    if portable:
        monkeypatch.setattr(module, "_NOT_ENOUGH_DATA", None)
    admin = aioredis.Redis.from_url(private_redis.url)
    store = RedisLatestStore.from_url(private_redis.url)
    batch = [LatestValue(f"stock:quote:E{i}", b"x" * 200, 60) for i in range(2000)]
    await store.put_many(batch)
    await admin.config_set("maxmemory-policy", "noeviction")
    await admin.config_set("maxmemory", "1")
    with pytest.raises(StoreUnavailable, match="OOM command not allowed") as info:
        await store.put_many(batch)
    assert "2000 of 2000 SET commands failed" in str(info.value)
    await admin.config_set("maxmemory", "0")
    await store.put_many(batch)
    assert await admin.get("stock:quote:E1999") == b"x" * 200
    await store.aclose()
    await admin.aclose()
