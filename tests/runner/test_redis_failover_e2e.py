"""The service (``python -m polygon_runner run``, a subprocess) writing through a managed-Redis
failover: ``REDIS_URL`` names a host in /etc/hosts that moves from the primary on 127.0.0.2
to the promoted replica on 127.0.0.3 and back (see ``bench.redis_failover``), while the
simulator streams."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis
from bench.expected import wire_record_values
from bench.redis_failover import MovingName, RedisFailoverPair, hosts_file_writable

from polygon_sim.config import SimulatorConfig
from polygon_sim.server import PolygonSimulator
from tests.helpers import eventually, missing_server
from tests.redis_servers import RedisServerProcess, free_port, redis_server_available
from tests.runner.test_service_e2e import (
    KEY_OF,
    delivered_latest,
    get,
    metric,
    start_service,
)

pytestmark = pytest.mark.integration
API_KEY = "failover-key-41c7"
SYMBOLS = ("AAPL", "BRK.B", "MSFT", "TSLA")
RATE = 1500.0
"""Events per second per connection."""
EVENTS = 30_000
TIME_FIELD = {"agg1m": "start", "fmv": "ts", "trade": "ts", "quote": "ts"}


@pytest.fixture
def world() -> Iterator[tuple[MovingName, RedisFailoverPair]]:
    if not redis_server_available():
        missing_server("redis-server is not installed")
    if not hosts_file_writable():
        missing_server("/etc/hosts is not writable: the failover test moves a name in it")
    with MovingName() as name, RedisFailoverPair() as pair:
        name.point(pair.primary.host)
        yield name, pair


async def test_the_service_writes_through_two_failovers(world, tmp_path) -> None:
    name, pair = world
    config = SimulatorConfig(
        api_key=API_KEY,
        symbols=SYMBOLS,
        events_per_second=RATE,
        max_events=EVENTS,
        track_latest=True,
        events_per_frame=10,
    )
    health_port = free_port()
    log = tmp_path / "service.log"
    seen: dict[str, int] = {}
    rollbacks: list[str] = []
    stop = asyncio.Event()
    judging = asyncio.Event()  # off during the bare failover: its losses are Redis's
    judging.set()

    async def watch(keys: list[str]) -> None:
        """Reads every key from the current primary; notes any value older than one seen."""
        while not stop.is_set():
            client = aioredis.Redis(host=pair.primary.host, port=pair.port, socket_timeout=1)
            try:
                for key, raw in zip(keys, await client.mget(keys), strict=True):
                    if raw is not None and judging.is_set():
                        record = json.loads(raw)
                        t = record[TIME_FIELD[key.split(":")[1]]]
                        if t < seen.get(key, -1):
                            rollbacks.append(f"{key}: {seen[key]} -> {t}")
                        seen[key] = max(t, seen.get(key, -1))
            except (OSError, aioredis.RedisError):
                pass
            finally:
                await client.aclose()
            await asyncio.sleep(0.005)

    async with PolygonSimulator(config) as sim:
        env = {
            "POLYGON_API_KEY": API_KEY,
            "POLYGON_WS_SYMBOLS": ",".join(SYMBOLS),
            "POLYGON_DISCOVER_TICKERS": "false",
            "POLYGON_WS_HOST_REALTIME": sim.realtime_url,
            "POLYGON_WS_HOST_DELAYED": sim.delayed_url,
            "REDIS_URL": f"redis://{name.name}:{pair.port}/0",
            "HEALTH_PORT": str(health_port),
            "LOG_FORMAT": "json",
        }
        proc = await start_service(env, log)
        watcher: asyncio.Task[None] | None = None
        try:
            await eventually(lambda: len(delivered_latest(sim)) >= 4 * len(SYMBOLS), 20)
            keys = sorted(f"stock:{KEY_OF[c]}:{s}" for c, s in delivered_latest(sim))
            watcher = asyncio.create_task(watch(keys))
            gaps = []
            for coordinated in (True, False):  # managed, then the bare procedure, back
                await asyncio.sleep(0.5)
                await asyncio.to_thread(pair.wait_in_sync)
                if not coordinated:  # writes the old primary takes after the promotion
                    judging.clear()  # are lost with its dataset: not the service's doing
                await asyncio.to_thread(pair.failover, name, coordinated=coordinated)
                gaps.append(await asyncio.to_thread(pair.wait_first_write, 20.0))
                await asyncio.to_thread(pair.wait_in_sync)
                await asyncio.sleep(0.05)  # a read in flight is done
                seen.clear()
                judging.set()
            await sim.truth.wait_total(EVENTS, timeout_s=60)
            direct = aioredis.Redis(host=pair.primary.host, port=pair.port)

            async def all_latest_written() -> bool:
                for (channel, symbol), event in delivered_latest(sim).items():
                    raw = await direct.get(f"stock:{KEY_OF[channel]}:{symbol}")
                    if raw is None or list(json.loads(raw).values())[:-1] != (
                        wire_record_values(channel, json.loads(event.raw))
                    ):
                        return False
                return True

            async with asyncio.timeout(15):
                while not await all_latest_written():  # noqa: ASYNC110 - polling Redis
                    await asyncio.sleep(0.05)
            await direct.aclose()
            stop.set()
            await watcher
            assert rollbacks == []
            _, text = await get(f"http://127.0.0.1:{health_port}/metrics")
            resets = metric(text, "polygon_redis_node_resets_total")
            assert set(resets) == {'{reason="READONLY"}'}, resets
            assert resets['{reason="READONLY"}'] < 50  # left on the reply, no READONLY loop
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), timeout=30) == 0
        finally:
            stop.set()
            if watcher is not None:
                await asyncio.gather(watcher, return_exceptions=True)
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    messages = [line["msg"] for line in lines]
    left = [m for m in messages if "left the node (READONLY" in m]
    back = [m for m in messages if "writes accepted again by 127.0.0." in m]
    assert len(left) == 2 and len(back) == 2, messages
    assert sum("store unavailable" in m for m in messages) == 2
    print(f"service failover: first write after the name moved {gaps[0] * 1000:.0f} ms "
          f"(managed), {gaps[1] * 1000:.0f} ms (bare)")  # fmt: skip


@pytest.mark.parametrize("case", ["WRONGPASS", "NOPERM"])
async def test_refused_credentials_stop_the_service_with_one_clear_line(case, tmp_path) -> None:
    """Not retried, not a traceback: one CRITICAL line naming the refusal, exit 1."""
    if not redis_server_available():
        missing_server("redis-server is not installed")
    secret = "pw-refused-3e8a"
    with RedisServerProcess(extra_args=("--requirepass", secret)) as server:
        with redis.Redis.from_url(server.url, password=secret) as admin:
            admin.acl_setuser("writer", enabled=True, passwords=[f"+{secret}"],
                              keys=["*"], commands=["+@all", "-set"])  # fmt: skip
        user = {"WRONGPASS": f":wrong-{secret}", "NOPERM": f"writer:{secret}"}[case]
        config = SimulatorConfig(api_key=API_KEY, symbols=SYMBOLS, events_per_second=100.0)
        log = tmp_path / "service.log"
        async with PolygonSimulator(config) as sim:
            env = {
                "POLYGON_API_KEY": API_KEY,
                "POLYGON_WS_SYMBOLS": ",".join(SYMBOLS),
                "POLYGON_DISCOVER_TICKERS": "false",
                "POLYGON_WS_HOST_REALTIME": sim.realtime_url,
                "POLYGON_WS_HOST_DELAYED": sim.delayed_url,
                "REDIS_URL": f"redis://{user}@127.0.0.1:{server.port}/0",
                "HEALTH_PORT": str(free_port()),
                "LOG_FORMAT": "json",
            }
            proc = await start_service(env, log)
            try:
                assert await asyncio.wait_for(proc.wait(), timeout=30) == 1
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
    text = log.read_text()
    critical = [json.loads(ln) for ln in text.splitlines() if '"level":"CRITICAL"' in ln]
    assert len(critical) == 1, text[-3000:]
    assert case in critical[0]["msg"] and "refused" in critical[0]["msg"]
    assert "Traceback" not in text and secret not in text
