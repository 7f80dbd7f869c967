"""The leader lease and the fenced, latest-wins writes (SPEC §7) against real servers:
redis-server, a Redis Cluster, and the Upstash-shaped REST server in front of real Redis.
Read-back bypasses the adapters (redis-py on the server itself)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
import redis

from polygon_adapters.lease_scripts import Fence
from polygon_adapters.redis_store import RedisLatestStore
from polygon_adapters.upstash_store import UpstashLatestStore
from polygon_core.errors import LeaseLost
from polygon_core.keys import LEADER_KEY
from polygon_core.ports import LatestValue
from polygon_testing.upstash_server import UpstashServer

pytestmark = pytest.mark.integration
TOKEN = "lease-token"


@dataclass
class Target:
    kind: str
    store: Any
    direct: Any
    server_side_fence: bool


def _quote(ts: int | float, bid: int) -> LatestValue:
    body = b'{"symbol":"L","bid":%d,"bidSize":1,"ask":2,"askSize":1,"ts":%s,"updatedAt":"x"}'
    return LatestValue("stock:quote:L", body % (bid, str(ts).encode()), 60, ts)


def _agg(start: int, close: int) -> LatestValue:
    body = (
        b'{"symbol":"L","start":%d,"end":%d,"open":1,"high":1,"low":1,"close":%d,'
        b'"volume":1,"vwap":1,"updatedAt":"x"}'
    )
    return LatestValue("stock:agg1m:L", body % (start, start + 60_000, close), 120, start)


@pytest.fixture(params=["redis", "cluster", "upstash"])
async def target(request: pytest.FixtureRequest) -> AsyncIterator[Target]:
    kind = request.param
    server: UpstashServer | None = None
    if kind == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        direct: Any = redis.RedisCluster.from_url(cluster.url.replace("redis+cluster", "redis"))
        store: Any = RedisLatestStore.from_url(cluster.url)
    else:
        base = request.getfixturevalue("redis_server").url.rsplit("/", 1)[0] + "/5"
        direct = redis.Redis.from_url(base)
        if kind == "redis":
            store = RedisLatestStore.from_url(base)
        else:
            server = UpstashServer(base, TOKEN)
            store = UpstashLatestStore(await server.start(), TOKEN)
    direct.delete(LEADER_KEY, "stock:quote:L", "stock:agg1m:L")
    yield Target(kind, store, direct, server_side_fence=kind != "cluster")
    await store.aclose()
    if server is not None:
        await server.stop()
    direct.delete(LEADER_KEY)
    direct.close()


async def test_acquire_renew_release_by_owner_only(target: Target) -> None:
    lease = target.store.lease()
    assert await lease.acquire("a", 5000)
    assert not await lease.acquire("b", 5000)
    assert target.direct.get(LEADER_KEY) == b"a"
    assert 4000 < target.direct.pttl(LEADER_KEY) <= 5000
    assert await lease.renew("a", 9000)
    assert 8000 < target.direct.pttl(LEADER_KEY) <= 9000
    assert not await lease.renew("b", 9000)
    assert not await lease.release("b")
    assert target.direct.get(LEADER_KEY) == b"a"
    assert await lease.release("a")
    assert target.direct.get(LEADER_KEY) is None
    assert not await lease.renew("a", 9000)  # a released lease is not brought back
    assert await lease.acquire("b", 5000)
    assert await lease.holder() == "b"


async def test_an_expired_lease_is_taken_by_the_next(target: Target) -> None:
    lease = target.store.lease()
    assert await lease.acquire("a", 200)
    await asyncio.sleep(0.3)
    assert not await lease.renew("a", 200)
    assert await lease.acquire("b", 5000)


async def test_fenced_writes_latest_wins(target: Target) -> None:
    store, direct = target.store, target.direct
    assert await store.lease().acquire("me", 5000)
    store.fence = Fence("me", lambda: True)
    await store.put_many([_quote(1000, 1), _agg(60_000, 1)])
    await store.put_many([_quote(900, 2), _agg(0, 2)])  # older: refused, nothing rolled back
    assert b'"bid":1,' in direct.get("stock:quote:L")
    assert b'"close":1,' in direct.get("stock:agg1m:L")
    await store.put_many([_quote(1000, 3), _agg(120_000, 3)])  # equal ts, newer start: written
    assert b'"bid":3,' in direct.get("stock:quote:L")
    assert b'"close":3,' in direct.get("stock:agg1m:L")
    assert 110 < direct.ttl("stock:agg1m:L") <= 120
    await store.put_many([_quote(1000.5, 4)])  # a float event time compares as a number
    assert b'"bid":4,' in direct.get("stock:quote:L")
    direct.set("stock:quote:L", b"not a record")  # no event time stored: the new one wins
    await store.put_many([_quote(1, 5)])
    assert b'"bid":5,' in direct.get("stock:quote:L")
    refused = store.older_refused if target.kind == "upstash" else store.stats.older_refused
    assert refused == 2


async def test_a_held_value_is_written_only_over_an_older_record(target: Target) -> None:
    """A value held across a standby period (``strictly_newer``) loses a tie: a record of
    the same event time was written meanwhile by the task that led, e.g. the same
    minute's bar built from more trades."""
    store, direct = target.store, target.direct
    assert await store.lease().acquire("me", 5000)
    store.fence = Fence("me", lambda: True)
    await store.put_many([_quote(1000, 1), _agg(60_000, 1)])

    def held(v: LatestValue) -> LatestValue:
        return msgspec.structs.replace(v, strictly_newer=True)

    await store.put_many([held(_quote(1000, 2)), held(_agg(60_000, 2))])  # ties: refused
    assert b'"bid":1,' in direct.get("stock:quote:L")
    assert b'"close":1,' in direct.get("stock:agg1m:L")
    await store.put_many([held(_quote(1000.5, 3)), held(_agg(120_000, 3))])  # newer: written
    assert b'"bid":3,' in direct.get("stock:quote:L")
    assert b'"close":3,' in direct.get("stock:agg1m:L")
    direct.delete("stock:quote:L")
    await store.put_many([held(_quote(5, 4))])  # nothing stored: written
    assert b'"bid":4,' in direct.get("stock:quote:L")
    refused = store.older_refused if target.kind == "upstash" else store.stats.older_refused
    assert refused == 2


async def test_a_deposed_task_writes_nothing(target: Target) -> None:
    store, direct = target.store, target.direct
    assert await store.lease().acquire("successor", 5000)
    store.fence = Fence("me", lambda: False)  # past its own fencing deadline: no request
    with pytest.raises(LeaseLost):
        await store.put_many([_quote(5000, 9)])
    assert direct.get("stock:quote:L") is None
    if not target.server_side_fence:
        return  # Cluster: no script can read both the lease's slot and the batch's
    store.fence = Fence("me", lambda: True)  # it believes it still leads: the store refuses
    with pytest.raises(LeaseLost):
        await store.put_many([_quote(5000, 9), _agg(0, 9)])
    assert direct.get("stock:quote:L") is None and direct.get("stock:agg1m:L") is None


async def test_a_large_fenced_batch(target: Target) -> None:
    store, direct = target.store, target.direct
    assert await store.lease().acquire("me", 5000)
    store.fence = Fence("me", lambda: True)
    values = [
        LatestValue(f"stock:trade:B{i}", b'{"symbol":"B","ts":%d}' % i, 60, i) for i in range(3000)
    ]
    await store.put_many(values)
    assert direct.get("stock:trade:B2999") == b'{"symbol":"B","ts":2999}'
    direct.delete(*[v.key for v in values])


async def test_a_write_stalled_at_the_fencing_deadline_is_abandoned(redis_server) -> None:
    """A flow that goes silent (no FIN, no RST) mid-write: the write ends at the fencing
    deadline with LeaseLost, not after the 5 s socket timeout and its retries."""
    from bench.soak.proxy import TcpProxy

    proxy = TcpProxy(redis_server.port)
    await proxy.up()
    store = RedisLatestStore.from_url(f"redis://127.0.0.1:{proxy.port}/5")
    try:
        assert await store.lease().acquire("stall", 5000)
        deadline = asyncio.get_running_loop().time() + 0.3
        store.fence = Fence(
            "stall", lambda: True, lambda: deadline - asyncio.get_running_loop().time()
        )
        await store.put_many([_quote(1, 1)])
        assert proxy.silence() > 0
        started = asyncio.get_running_loop().time()
        with pytest.raises(LeaseLost, match="fencing deadline"):
            await store.put_many([_quote(2, 2)])
        assert asyncio.get_running_loop().time() - started < 2.0
    finally:
        await store.aclose()
        await proxy.down()
        direct = redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + "/5")
        direct.delete(LEADER_KEY, "stock:quote:L")
        direct.close()
