"""Redis Cluster failover with real parts: a 6-node cluster (3 primaries, a replica each), a
manual failover (``CLUSTER FAILOVER`` on a replica: the old primary answers MOVED) and a
primary killed (the cluster elects its replica after ``cluster-node-timeout``; meanwhile
resets, refused connections, CLUSTERDOWN), while the flush loop keeps writing."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest
import redis

from polygon_adapters.redis_store import RedisLatestStore
from polygon_adapters.runtime import AsyncioScheduler, SystemClock
from polygon_core.codec import decode_frame
from polygon_core.ingest import Ingest
from tests.helpers import eventually, missing_server
from tests.redis_cluster import RedisClusterProcess, cluster_tools_available
from tests.strategies import dumps

pytestmark = pytest.mark.integration
SYMBOLS = [f"C{i}" for i in range(60)]


@pytest.fixture
def cluster() -> Iterator[RedisClusterProcess]:
    if not cluster_tools_available():
        missing_server("redis-server / redis-cli are not installed")
    with RedisClusterProcess(replicas=1) as c:
        yield c


async def test_cluster_writes_go_on_through_a_manual_and_a_forced_failover(cluster) -> None:
    store = RedisLatestStore.from_url(cluster.url, connect_timeout_s=0.5, timeout_s=1.0)
    successes: list[float] = []
    ingest = Ingest(
        store,
        SystemClock(),
        AsyncioScheduler(),
        retry_initial_s=0.02,
        retry_max_s=0.5,
        flush_observer=lambda _s, _n: successes.append(time.monotonic()),
    )
    flusher = asyncio.create_task(ingest.run_flush_loop())
    newest: dict[str, int] = {}
    t = 0

    def produce(symbols: list[str]) -> None:
        nonlocal t
        for sym in symbols:
            t += 1
            event = {"ev": "T", "sym": sym, "p": 1, "s": 1, "c": [], "t": t}
            ingest.on_frame(decode_frame(dumps([event])), 0)
            newest[sym] = t

    async def stream(seconds: float) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            produce(SYMBOLS[t % 3 :: 3])
            await asyncio.sleep(0.005)

    try:
        await stream(0.5)
        roles = cluster.roles()
        replica = next(p for p, r in roles.items() if r == "slave")
        for _ in range(5):  # a manual failover gives up after 5 s if the replica lags
            await asyncio.to_thread(cluster.cli, replica, "cluster", "failover")
            for _ in range(30):
                await stream(0.2)
                if cluster.roles()[replica] == "master":
                    break
            else:
                continue
            break
        assert cluster.roles()[replica] == "master"
        await stream(0.5)
        written = ingest.stats.values_written
        victim = next(p for p, r in cluster.roles().items() if r == "master" and p != replica)
        cluster.kill(victim)
        killed = time.monotonic()
        async with asyncio.timeout(20):  # the cluster elects the replica; writes resume
            while ingest.stats.in_outage or ingest.stats.values_written < written + 500:
                await stream(0.1)
        produce(SYMBOLS)
        await eventually(lambda: not ingest.stats.in_outage and len(ingest.buffer) == 0, 20)
        after = [f for f in successes if f > killed]  # successes after the kill
        gaps = [b - a for a, b in zip([killed, *after], after, strict=False)]
        survivor = next(p for p in cluster.ports if p != victim)
        direct = redis.RedisCluster(host="127.0.0.1", port=survivor)

        def all_newest() -> bool:
            raws = [direct.get(f"stock:trade:{sym}") for sym in newest]
            return all(
                raw is not None and json.loads(raw)["ts"] == ts
                for raw, ts in zip(raws, newest.values(), strict=True)
            )

        await eventually(all_newest, within_s=10)
        direct.close()
        assert ingest.buffer.late_dropped == 0
        print(f"cluster: longest gap between writes after a primary was killed "
              f"{max(gaps):.1f} s; node resets {dict(store.stats.resets_by_reason)}")  # fmt: skip
    finally:
        ingest.stop()
        flusher.cancel()
        await asyncio.gather(flusher, return_exceptions=True)
        await store.aclose()
