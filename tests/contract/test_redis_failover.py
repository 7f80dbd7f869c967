"""Managed-Redis failover with real parts: two redis-servers on 127.0.0.2 and 127.0.0.3 and a
host name in /etc/hosts that moves (see ``bench.redis_failover``), plus the replies a node
gives when it is not the writable primary (READONLY, MASTERDOWN, LOADING), each from a real
server in that state."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from bench.redis_failover import MovingName, RedisFailoverPair, hosts_file_writable

from polygon_adapters.redis_store import RedisLatestStore
from polygon_adapters.runtime import AsyncioScheduler, SystemClock
from polygon_core.codec import decode_frame
from polygon_core.errors import StoreRejected, StoreUnavailable
from polygon_core.ingest import Ingest
from polygon_core.ports import LatestValue
from tests.helpers import eventually, missing_server
from tests.redis_servers import RedisServerProcess, free_port, redis_server_available
from tests.server_fixtures import self_signed
from tests.strategies import dumps

pytestmark = pytest.mark.integration
SYMBOLS = [f"F{i}" for i in range(40)]


def _need_redis() -> None:
    if not redis_server_available():
        missing_server("redis-server is not installed")


@pytest.fixture
def moving_name() -> Iterator[MovingName]:
    _need_redis()
    if not hosts_file_writable():
        missing_server("/etc/hosts is not writable: the failover tests move a name in it")
    before = Path("/etc/hosts").read_bytes()
    with MovingName() as name:
        yield name
    after = Path("/etc/hosts").read_bytes()
    assert name.name.encode() not in after
    if b"polygon-sink.test" not in before + after:  # no concurrent run edited it meanwhile
        assert after == before


@pytest.fixture
def pair() -> Iterator[RedisFailoverPair]:
    _need_redis()
    with RedisFailoverPair() as servers:
        yield servers


class Writer:
    """The flush loop over a real store, fed quotes with rising timestamps, and a watcher
    that reads every key from whichever node the name points to and notes any rollback."""

    def __init__(self, url: str, pair: RedisFailoverPair) -> None:
        self.store = RedisLatestStore.from_url(url, connect_timeout_s=0.5, timeout_s=1.0)
        self.successes: list[float] = []
        self.ingest = Ingest(
            self.store,
            SystemClock(),
            AsyncioScheduler(),
            retry_initial_s=0.02,
            retry_max_s=0.5,
            flush_observer=lambda _s, _n: self.successes.append(time.monotonic()),
        )
        self.pair = pair
        self.newest: dict[str, int] = {}
        self.seen: dict[str, int] = {}
        self.rollbacks: list[str] = []
        self._t = 0
        self._rng = random.Random(13)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def produce(self, count: int) -> None:
        for _ in range(count):
            self._t += 1
            sym = self._rng.choice(SYMBOLS)
            event = {"ev": "Q", "sym": sym, "bp": 1, "bs": 1, "ap": 2, "as": 1, "t": self._t}
            self.ingest.on_frame(decode_frame(dumps([event])), 0)
            self.newest[sym] = self._t

    def produce_every_key(self) -> None:
        for sym in SYMBOLS:
            self._t += 1
            event = {"ev": "Q", "sym": sym, "bp": 1, "bs": 1, "ap": 2, "as": 1, "t": self._t}
            self.ingest.on_frame(decode_frame(dumps([event])), 0)
            self.newest[sym] = self._t

    async def _feed(self) -> None:
        while not self._stop.is_set():
            self.produce(20)
            await asyncio.sleep(0.002)

    async def _watch(self) -> None:
        while not self._stop.is_set():
            primary = self.pair.primary
            client = aioredis.Redis(host=primary.host, port=self.pair.port, socket_timeout=1)
            try:
                for raw, sym in zip(
                    await client.mget([f"stock:quote:{s}" for s in SYMBOLS]), SYMBOLS, strict=True
                ):
                    if raw is None:
                        continue
                    ts = json.loads(raw)["ts"]
                    if ts < self.seen.get(sym, -1):
                        self.rollbacks.append(f"{sym}: {self.seen[sym]} -> {ts} on {primary}")
                    self.seen[sym] = max(ts, self.seen.get(sym, -1))
            except (OSError, aioredis.RedisError):
                pass
            finally:
                await client.aclose()
            await asyncio.sleep(0.005)

    async def __aenter__(self) -> Writer:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        self.ingest.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.store.aclose()

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self.ingest.run_flush_loop()),
            asyncio.create_task(self._feed()),
            asyncio.create_task(self._watch()),
        ]

    async def settle_and_check(self) -> None:
        """Stop feeding, write one newest value per key; then every key holds its newest
        value on the node the name points to, and nothing was ever seen to roll back."""
        self._stop.set()
        await asyncio.gather(*self._tasks[1:])
        self.produce_every_key()
        with self.pair.client(self.pair.primary) as direct:

            def all_newest() -> bool:
                raws = direct.mget([f"stock:quote:{s}" for s in self.newest])
                return all(
                    raw is not None and json.loads(raw)["ts"] == ts
                    for raw, ts in zip(raws, self.newest.values(), strict=True)
                )

            await eventually(all_newest, within_s=15)
        assert len(self.ingest.buffer) == 0
        assert self.rollbacks == []
        assert self.ingest.buffer.late_dropped == 0

    def first_success_after(self, moment: float) -> float:
        return next(t for t in self.successes if t >= moment) - moment


@pytest.mark.parametrize("coordinated", [True, False], ids=["managed", "bare"])
async def test_writes_follow_the_name_through_failovers(moving_name, pair, coordinated) -> None:
    """The pooled connection to the demoted node is left on its first READONLY; writes go
    on through the name on the promoted node; nothing pending is lost, nothing rolls back
    (with the managed procedure; the bare one may lose what the old primary took after the
    promotion, so only the end state is checked there)."""
    moving_name.point(pair.primary.host)
    async with Writer(f"redis://{moving_name.name}:{pair.port}/0", pair) as writer:
        await eventually(lambda: writer.ingest.stats.values_written > 200)
        gaps = []
        for _ in range(2):  # there and back again
            moved = await asyncio.to_thread(pair.failover, moving_name, coordinated=coordinated)
            written = writer.ingest.stats.values_written
            await eventually(lambda w=written: writer.ingest.stats.values_written > w + 200, 10)
            gaps.append(writer.first_success_after(moved))
            await asyncio.to_thread(pair.wait_in_sync)
        if not coordinated:
            writer.rollbacks.clear()  # the bare procedure drops what the old primary took late
        await writer.settle_and_check()
        stats = writer.store.stats
        assert writer.ingest.stats.outages <= 2 and set(stats.resets_by_reason) <= {"READONLY"}
        assert stats.node_resets <= 40, stats.resets_by_reason  # left on the reply, no loop
    print(f"failover ({'managed' if coordinated else 'bare'}): first write after the name "
          f"moved {', '.join(f'{g * 1000:.0f} ms' for g in gaps)}")  # fmt: skip


async def test_a_replaced_node_connection_refused_then_the_name_moves(moving_name, pair) -> None:
    """The primary dies (a node replaced); the replica is promoted; the name moves a moment
    later. Refused connections meanwhile; then writes resume on the new node."""
    moving_name.point(pair.primary.host)
    async with Writer(f"redis://{moving_name.name}:{pair.port}/0", pair) as writer:
        await eventually(lambda: writer.ingest.stats.values_written > 200)
        old, new = pair.primary, pair.replica
        await asyncio.to_thread(pair.wait_in_sync)
        await asyncio.to_thread(old.kill)
        await eventually(lambda: writer.ingest.stats.in_outage)
        with pair.client(new) as c:
            c.execute_command("REPLICAOF", "NO", "ONE")
        pair.primary, pair.replica = new, old
        await asyncio.sleep(0.3)
        moving_name.point(new.host)
        written = writer.ingest.stats.values_written
        await eventually(lambda: writer.ingest.stats.values_written > written + 200, within_s=10)
        await writer.settle_and_check()
        assert "connection" in writer.store.stats.resets_by_reason


async def test_the_lease_follows_the_name_through_a_failover(moving_name, pair) -> None:
    """A lease renewal answered READONLY by the demoted node leaves the node, as a write
    does: the next renewal reaches the promoted one through the name, well within the TTL
    (before, the pooled connection kept asking the old node and the active task fenced
    itself at its deadline: found by the soak, with HA_ENABLED)."""
    moving_name.point(pair.primary.host)
    store = RedisLatestStore.from_url(f"redis://{moving_name.name}:{pair.port}/0")
    lease = store.lease()
    try:
        assert await lease.acquire("me", 5000)
        await asyncio.to_thread(pair.wait_in_sync)
        await asyncio.to_thread(pair.failover, moving_name)
        with pytest.raises(StoreUnavailable, match="READONLY"):
            await lease.renew("me", 5000)
        assert await lease.renew("me", 5000)
        assert store.stats.resets_by_reason["READONLY"] == 1
    finally:
        await store.aclose()


async def test_tls_failover_through_the_name(moving_name, tmp_path) -> None:
    """``rediss://`` to the name, a certificate for ``*.polygon-sink.test`` on both nodes."""
    cert, key = self_signed(tmp_path, "pair", "*.polygon-sink.test")
    tls_port = free_port()
    args = ("--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file",
            str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no")  # fmt: skip
    with RedisFailoverPair(extra_args=args) as pair:
        moving_name.point(pair.primary.host)
        url = f"rediss://{moving_name.name}:{tls_port}/0?ssl_ca_certs={cert}"
        async with Writer(url, pair) as writer:
            await eventually(lambda: writer.ingest.stats.values_written > 200)
            moved = await asyncio.to_thread(pair.failover, moving_name)
            written = writer.ingest.stats.values_written
            await eventually(lambda: writer.ingest.stats.values_written > written + 200, 10)
            gap = writer.first_success_after(moved)
            await writer.settle_and_check()
            assert writer.store.stats.resets_by_reason.keys() == {"READONLY"}
    print(f"TLS failover: first write after the name moved {gap * 1000:.0f} ms")


# -- each reply of a node that is not the writable primary, from a real server -------------


async def _put_fails_and_leaves(store: RedisLatestStore, reason: str, admin: redis.Redis) -> None:
    """One failing batch: StoreUnavailable, the node left (its connection closed)."""
    with pytest.raises(StoreUnavailable, match=reason):
        await store.put_many([LatestValue("stock:trade:X", b"{}", 60)])
    assert store.stats.resets_by_reason[reason] >= 1
    names = [c.get("name") for c in admin.client_list()]
    # the pooled connection was dropped, not kept
    assert not [n for n in names if (n or "").startswith("polygon-sink")]


async def test_readonly_from_a_replica(pair) -> None:
    store = RedisLatestStore.from_url(f"redis://{pair.replica.host}:{pair.port}/0")
    with pair.client(pair.replica) as admin:
        await _put_fails_and_leaves(store, "READONLY", admin)
    await store.aclose()


async def test_masterdown_from_a_replica_cut_off_from_its_primary() -> None:
    _need_redis()
    args = ("--replica-serve-stale-data", "no", "--replica-read-only", "no",
            "--replicaof", "127.0.0.1", str(free_port()))  # fmt: skip
    with RedisServerProcess(extra_args=args) as orphan:
        store = RedisLatestStore.from_url(orphan.url)
        with redis.Redis.from_url(orphan.url) as admin:
            await _put_fails_and_leaves(store, "MASTERDOWN", admin)
        await store.aclose()


async def test_loading_from_a_node_loading_its_dataset(tmp_path) -> None:
    """A restarted node loading an RDB of 5000 keys slowly (``key-load-delay``, the setting
    Redis's own test suite uses) answers LOADING until it is done (the test does not wait)."""
    _need_redis()
    with RedisServerProcess(extra_args=("--dir", str(tmp_path))) as seed:
        with redis.Redis.from_url(seed.url) as c:
            c.eval("for i=1,5000 do redis.call('set','k'..i,'v') end", 0)
            c.save()
    slow = ("--dir", str(tmp_path), "--key-load-delay", "1000",
            "--loading-process-events-interval-bytes", "1024")  # fmt: skip
    with RedisServerProcess(extra_args=slow) as loading:
        store = RedisLatestStore.from_url(loading.url)
        with pytest.raises(StoreUnavailable, match="LOADING"):
            await store.put_many([LatestValue("stock:trade:L", b"{}", 60)])
        assert store.stats.resets_by_reason["LOADING"] >= 1
        await store.aclose()


@pytest.mark.parametrize("case", ["WRONGPASS", "NOAUTH", "NOPERM"])
async def test_credential_errors_stay_fatal_with_one_clear_message(case, caplog) -> None:
    _need_redis()
    secret = "s3cret-failover-9d2"
    with RedisServerProcess(extra_args=("--requirepass", secret)) as server:
        with redis.Redis.from_url(server.url, password=secret) as admin:
            admin.acl_setuser("writer", enabled=True, passwords=[f"+{secret}"],
                              keys=["*"], commands=["+@all", "-set"])  # fmt: skip
        base = f"127.0.0.1:{server.port}/0"
        url = {
            "WRONGPASS": f"redis://:wrong-{secret}@{base}",
            "NOAUTH": f"redis://{base}",
            "NOPERM": f"redis://writer:{secret}@{base}",
        }[case]
        store = RedisLatestStore.from_url(url)
        with pytest.raises(StoreRejected) as info:
            await store.put_many([LatestValue("stock:trade:A", b"{}", 60)])
        message = str(info.value)
        assert case in message and secret not in message + caplog.text
        assert store.stats.node_resets == 0
        await store.aclose()
