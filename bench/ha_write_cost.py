"""What the fenced, latest-wins write (``HA_ENABLED``) costs Redis per value, against the
plain packed ``SET ... EX``: a throwaway redis-server, the service's own store adapter,
batches of realistic quote records, and Redis' ``INFO commandstats`` (server CPU inside
the commands: ``usec`` of ``SET``, or of ``EVAL`` including the calls its script makes).

    python -m bench.ha_write_cost [--batch 500] [--batches 200]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import redis

from polygon_adapters.lease_scripts import Fence
from polygon_adapters.redis_store import RedisLatestStore
from polygon_core.keys import LEADER_KEY
from polygon_core.ports import LatestValue
from polygon_testing.local_redis import RedisServerProcess

RECORD = (
    b'{"symbol":"S%05d","bid":192.11,"bidSize":2,"ask":192.13,"askSize":3,'
    b'"ts":%d,"updatedAt":"2026-12-03T09:30:00.000Z"}'
)


def _batch(size: int, ts: int) -> list[LatestValue]:
    return [LatestValue(f"stock:quote:S{i:05d}", RECORD % (i, ts), 60, ts) for i in range(size)]


async def _run(url: str, fenced: bool, size: int, batches: int) -> tuple[float, float]:
    """(server usec per value, client seconds per batch)."""
    admin = redis.Redis.from_url(url)
    store = RedisLatestStore.from_url(url)
    admin.delete(LEADER_KEY)
    if fenced:
        assert await store.lease().acquire("bench", 60_000)
        store.fence = Fence("bench", lambda: True)
    await store.put_many(_batch(size, 1))  # keys exist: the script compares each
    admin.config_resetstat()
    started = time.perf_counter()
    for n in range(batches):
        await store.put_many(_batch(size, 2 + n))
    elapsed = time.perf_counter() - started
    stats = admin.info("commandstats")
    name = "cmdstat_eval" if fenced else "cmdstat_set"
    usec = float(stats[name]["usec"])
    await store.aclose()
    admin.close()
    return usec / (size * batches), elapsed / batches


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--batches", type=int, default=200)
    args = p.parse_args()
    with RedisServerProcess() as server:
        for fenced in (False, True, False, True):
            usec, per_batch = asyncio.run(_run(server.url, fenced, args.batch, args.batches))
            label = "fenced EVAL" if fenced else "plain SET  "
            print(
                f"{label}: {usec:.2f} us of Redis CPU per value; "
                f"{per_batch * 1000:.2f} ms per batch of {args.batch} (client wall time)"
            )


if __name__ == "__main__":
    main()
