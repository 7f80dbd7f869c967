"""One contract for the ``LatestStore`` port, run against every adapter.

Read-back bypasses the adapter under test: plain GET/TTL with redis-py on the server itself
(for Upstash, on the Redis behind the local Upstash-shaped server).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from polygon_adapters.memory import InMemoryLatestStore
from polygon_adapters.redis_store import RedisLatestStore
from polygon_adapters.upstash_store import UpstashLatestStore
from polygon_core.errors import StoreUnavailable
from polygon_core.events import Channel
from polygon_core.keys import KEY_PREFIXES
from polygon_core.ports import LatestStore, LatestValue
from polygon_testing.upstash_server import UpstashServer
from tests.strategies import symbols

TOKEN = "contract-token"

keys = st.builds(
    lambda ch, sym: KEY_PREFIXES[ch] + sym,
    st.sampled_from(list(Channel)),
    symbols.filter(lambda s: ":" not in s and s.strip() == s and " " not in s),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
).map(lambda v: __import__("msgspec").json.encode(v))
values = st.builds(LatestValue, keys, json_values, st.integers(min_value=5, max_value=100_000))
batches = st.lists(values, min_size=1, max_size=40, unique_by=lambda v: v.key)


class Backend(ABC):
    """How to build the adapter under test and read its writes back around it."""

    @abstractmethod
    async def make_store(self) -> LatestStore: ...

    @abstractmethod
    def read_back(self, key: str) -> tuple[bytes | None, float]:
        """(value, TTL in seconds) read directly from the server."""

    async def aclose(self) -> None:
        return None


class LatestStoreContract:
    """The port's contract; subclasses provide a ``backend`` fixture."""

    @pytest.fixture
    async def store(self, backend: Backend) -> AsyncIterator[LatestStore]:
        store = await backend.make_store()
        yield store
        await store.aclose()

    async def test_batch_reads_back_byte_identical_with_its_ttl(self, store, backend) -> None:
        batch = [
            LatestValue("stock:quote:AAPL", b'{"symbol":"AAPL","bid":192}', 60),
            LatestValue("stock:agg1m:BRK.B", b'{"symbol":"BRK.B","vwap":1.5}', 120),
            LatestValue("stock:fmv:AMpB", '{"symbol":"AMpB","n":"é€😀"}'.encode(), 30),
        ]
        await store.put_many(batch)
        for v in batch:
            value, ttl = backend.read_back(v.key)
            assert value == v.value
            assert v.ttl_s - 2 < ttl <= v.ttl_s

    # One store per test, reused by every example; the method runs under each adapter's class.
    @settings(
        max_examples=25,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.differing_executors,
        ],
    )
    @given(batch=batches)
    async def test_generated_batches_read_back(self, store, backend, batch) -> None:
        await store.put_many(batch)
        for v in batch:
            value, ttl = backend.read_back(v.key)
            assert value == v.value, v.key
            assert v.ttl_s - 2 < ttl <= v.ttl_s

    async def test_overwrite_replaces_value_and_refreshes_ttl(self, store, backend) -> None:
        await store.put_many([LatestValue("stock:trade:OVR", b'{"p":1}', 10)])
        await store.put_many([LatestValue("stock:trade:OVR", b'{"p":2}', 500)])
        value, ttl = backend.read_back("stock:trade:OVR")
        assert value == b'{"p":2}' and 498 < ttl <= 500

    async def test_empty_batch_is_a_no_op(self, store) -> None:
        await store.put_many([])

    async def test_a_large_batch(self, store, backend) -> None:
        batch = [
            LatestValue(f"stock:quote:S{i}", b'{"symbol":"S%d","pad":"%s"}' % (i, b"x" * 200), 60)
            for i in range(12_000)
        ]
        await store.put_many(batch)
        for i in (0, 5_999, 11_999):
            assert backend.read_back(f"stock:quote:S{i}")[0] == batch[i].value


class StoreMachine(RuleBasedStateMachine):
    """Adapter vs a dict model; async calls run on the machine's own loop."""

    backend_factory: type[Backend] | None = None

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        assert self.backend_factory is not None
        self.backend = self.backend_factory()
        self.store = self.loop.run_until_complete(self.backend.make_store())
        self.model: dict[str, tuple[bytes, int]] = {}

    @rule(batch=batches)
    def put_many(self, batch: list[LatestValue]) -> None:
        self.loop.run_until_complete(self.store.put_many(batch))
        for v in batch:
            self.model[v.key] = (v.value, v.ttl_s)

    @invariant()
    def store_matches_model(self) -> None:
        for key, (value, ttl_s) in self.model.items():
            got, ttl = self.backend.read_back(key)
            assert got == value
            assert ttl_s - 2 < ttl <= ttl_s

    def teardown(self) -> None:
        self.loop.run_until_complete(self.store.aclose())
        self.loop.run_until_complete(self.backend.aclose())
        self.loop.close()


def run_machine(backend_factory: type[Backend]) -> None:
    machine = type("Machine", (StoreMachine,), {"backend_factory": backend_factory})
    settings_ = settings(max_examples=10, stateful_step_count=6, deadline=None)
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(machine, settings=settings_)


# -- in-memory ---------------------------------------------------------------------------


class MemoryBackend(Backend):
    def __init__(self) -> None:
        self.memory = InMemoryLatestStore()

    async def make_store(self) -> LatestStore:
        return self.memory

    def read_back(self, key: str) -> tuple[bytes | None, float]:
        return self.memory.get(key), self.memory.ttl(key) or -2


class TestInMemoryStore(LatestStoreContract):
    @pytest.fixture
    def backend(self) -> Backend:
        return MemoryBackend()

    def test_stateful(self) -> None:
        run_machine(MemoryBackend)


# -- real Redis ---------------------------------------------------------------------------


class RedisBackend(Backend):
    url = ""

    def __init__(self) -> None:
        self.direct = redis.Redis.from_url(self.url)

    async def make_store(self) -> LatestStore:
        return RedisLatestStore.from_url(self.url)

    def read_back(self, key: str) -> tuple[bytes | None, float]:
        return self.direct.get(key), self.direct.pttl(key) / 1000

    async def aclose(self) -> None:
        self.direct.close()


@pytest.mark.integration
class TestRedisStore(LatestStoreContract):
    @pytest.fixture
    def backend(self, redis_server) -> Iterator[Backend]:
        RedisBackend.url = redis_server.url
        backend = RedisBackend()
        yield backend
        backend.direct.close()

    def test_stateful(self, redis_server) -> None:
        RedisBackend.url = redis_server.url
        run_machine(RedisBackend)

    async def test_unreachable_server_is_store_unavailable(self) -> None:
        store = RedisLatestStore.from_url("redis://127.0.0.1:1/0", connect_timeout_s=0.5)
        with pytest.raises(StoreUnavailable, match="127.0.0.1"):
            await store.put_many([LatestValue("stock:trade:X", b"{}", 5)])
        await store.aclose()


class TlsBackend(RedisBackend):
    tls_url = ""

    async def make_store(self) -> LatestStore:
        return RedisLatestStore.from_url(self.tls_url)


@pytest.mark.integration
class TestRedisTlsStore(LatestStoreContract):
    """``rediss://``: the same contract over TLS (certificate verified against our CA)."""

    @pytest.fixture
    def backend(self, redis_tls) -> Iterator[Backend]:
        TlsBackend.url = redis_tls.server.url  # read back over the plain port
        TlsBackend.tls_url = redis_tls.url()
        backend = TlsBackend()
        yield backend
        backend.direct.close()

    async def test_an_unknown_certificate_is_refused(self, redis_tls, tmp_path) -> None:
        from tests.server_fixtures import self_signed

        other_ca, _ = self_signed(tmp_path, "other")
        store = RedisLatestStore.from_url(redis_tls.url(other_ca))
        with pytest.raises(StoreUnavailable, match="certificate"):
            await store.put_many([LatestValue("stock:trade:TLS", b"{}", 5)])
        await store.aclose()


# -- real Redis Cluster -------------------------------------------------------------------


class ClusterBackend(RedisBackend):
    """Reads back through redis-py's own cluster client (it follows the slots)."""

    def __init__(self) -> None:
        self.direct = redis.RedisCluster.from_url(self.url.replace("redis+cluster", "redis"))


@pytest.mark.integration
class TestRedisClusterStore(LatestStoreContract):
    @pytest.fixture
    def backend(self, redis_cluster) -> Iterator[Backend]:
        ClusterBackend.url = redis_cluster.url
        backend = ClusterBackend()
        yield backend
        backend.direct.close()

    def test_stateful(self, redis_cluster) -> None:
        ClusterBackend.url = redis_cluster.url
        run_machine(ClusterBackend)

    async def test_keys_spread_over_the_nodes(self, store, redis_cluster) -> None:
        assert isinstance(store, RedisLatestStore) and store.is_cluster
        await store.put_many([LatestValue(f"stock:trade:N{i}", b"{}", 60) for i in range(300)])
        per_node = [redis.Redis(port=p).dbsize() for p in redis_cluster.ports]
        assert all(n > 0 for n in per_node), per_node


# -- Upstash REST through the local Upstash-shaped server --------------------------------


class UpstashBackend(Backend):
    redis_url = ""

    def __init__(self) -> None:
        self.direct = redis.Redis.from_url(self.redis_url)
        self.server: UpstashServer | None = None

    async def make_store(self) -> LatestStore:
        self.server = UpstashServer(self.redis_url, TOKEN)
        base = await self.server.start()
        return UpstashLatestStore(base, TOKEN, max_request_bytes=200_000)

    def read_back(self, key: str) -> tuple[bytes | None, float]:
        return self.direct.get(key), self.direct.pttl(key) / 1000

    async def aclose(self) -> None:
        if self.server is not None:
            await self.server.stop()
        self.direct.close()


@pytest.mark.integration
class TestUpstashStore(LatestStoreContract):
    @pytest.fixture
    async def backend(self, redis_server) -> AsyncIterator[Backend]:
        UpstashBackend.redis_url = redis_server.url.rsplit("/", 1)[0] + "/2"
        backend = UpstashBackend()
        yield backend
        await backend.aclose()

    def test_stateful(self, redis_server) -> None:
        UpstashBackend.redis_url = redis_server.url.rsplit("/", 1)[0] + "/2"
        run_machine(UpstashBackend)

    async def test_large_batches_are_split_under_the_request_limit(self, store, backend) -> None:
        assert backend.server is not None
        before = backend.server.stats.requests
        await store.put_many(
            [LatestValue(f"stock:fmv:L{i}", b"{}" + b" " * 1000, 60) for i in range(1000)]
        )
        assert backend.server.stats.requests - before >= 5  # 1 MB in 200 kB requests
