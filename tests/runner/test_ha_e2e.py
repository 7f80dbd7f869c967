"""The leader lease end to end (SPEC §7), with real processes: two services as
subprocesses against the simulator (authenticated connections counted per host) and a
real redis-server (one test through the Upstash-shaped server, one with the S3 archive on
moto). Figures go to docs/reliability.md; the assertions are the issue's bounds."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator

import pytest

from polygon_adapters.s3_upload import open_s3_client
from polygon_sim.config import SimulatorConfig
from polygon_sim.server import PolygonSimulator
from polygon_testing.upstash_server import UpstashServer
from tests.helpers import eventually
from tests.moto_server import MotoS3Server, unique_bucket
from tests.runner.ha_harness import (
    API_KEY,
    KEYS,
    SYMBOLS,
    Monitor,
    Task,
    Watcher,
    service_env,
    start_task,
)

pytestmark = pytest.mark.integration
TTL_MS = 1000


@pytest.fixture(autouse=True)
async def _fail_if_stuck():
    """A test still running after 60 s prints every task's stack and is cancelled, so a
    hang fails with a traceback of where it was stuck instead of holding the suite."""
    import sys

    test_task = asyncio.current_task()

    async def watchdog() -> None:
        await asyncio.sleep(60)
        for task in asyncio.all_tasks():
            task.print_stack(file=sys.stderr)
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task() and task is not test_task:
                name = getattr(task.get_coro(), "__qualname__", "")
                if name.startswith("test_"):
                    task.cancel()

    guard = asyncio.ensure_future(watchdog())
    yield
    guard.cancel()


def _sim_config(**extra: object) -> SimulatorConfig:
    return SimulatorConfig(
        api_key=API_KEY, symbols=SYMBOLS, events_per_second=400, events_per_frame=5, **extra
    )


@contextlib.asynccontextmanager
async def bounded(cm, seconds: float = 15.0):
    """``async with cm``, but its exit may take at most ``seconds`` (a stuck teardown
    fails the test with a traceback instead of holding the suite)."""
    value = await cm.__aenter__()
    try:
        yield value
    except BaseException as exc:
        await asyncio.wait_for(cm.__aexit__(type(exc), exc, exc.__traceback__), seconds)
        raise
    else:
        await asyncio.wait_for(cm.__aexit__(None, None, None), seconds)


@contextlib.asynccontextmanager
async def watching(url: str) -> AsyncIterator[Watcher]:
    watcher = Watcher(url)
    task = asyncio.ensure_future(watcher.run())
    try:
        yield watcher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, 5)


async def _stop(*tasks: Task) -> None:
    for t in tasks:
        if t.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(t.pid, signal.SIGCONT)
                t.proc.send_signal(signal.SIGKILL)
            await asyncio.wait_for(t.proc.wait(), 10)


def _one_connection_per_host(sim: PolygonSimulator) -> None:
    most = {role.value: host.max_authenticated for role, host in sim.truth.hosts.items()}
    assert all(n == 1 for n in most.values()), most


async def _active_with_standby(sim, url, tmp_path, ttl_ms=TTL_MS, **extra) -> tuple[Task, Task]:
    a = await start_task(service_env(sim, url, ttl_ms, **extra), tmp_path, "a")
    await a.wait_role("active")
    b = await start_task(service_env(sim, url, ttl_ms, **extra), tmp_path, "b")
    await b.wait_role("standby")
    status, body = await b.health()
    assert status == 200 and body["ok"] and body["role"] == "standby", body
    assert "polygon_sink_leader 0.0" in await b.metrics()
    assert "polygon_sink_leader 1.0" in await a.metrics()
    return a, b


async def _hand_over(a: Task, b: Task, w: Watcher, sim: PolygonSimulator, what: str) -> None:
    """SIGTERM to the active ``a``: it exits 0, the standby ``b`` becomes active, the longest
    write gap is at most 2 s, no key expired or rolled back, one connection per host."""
    stopped = time.monotonic()
    a.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(a.proc.wait(), 15) == 0
    await b.wait_role("active", within_s=5)
    await asyncio.sleep(1.5)
    gap = w.max_gap_after(stopped)
    print(f"{what}: longest write gap {gap:.3f} s")
    assert gap <= 2.0
    assert w.expired == [] and w.rolled_back == []
    _one_connection_per_host(sim)


async def test_rolling_deploy_hands_over_on_sigterm(own_redis_server, tmp_path) -> None:
    async with bounded(PolygonSimulator(_sim_config())) as sim, watching(own_redis_server.url) as w:
        a, b = await _active_with_standby(sim, own_redis_server.url, tmp_path)
        try:
            await asyncio.sleep(1.0)
            assert w.changes > 10
            await _hand_over(a, b, w, sim, "rolling deploy")
            assert "leader lease released" in a.log.read_text()
        finally:
            await _stop(a, b)


async def test_sigkill_of_the_active_the_standby_takes_over(own_redis_server, tmp_path) -> None:
    async with bounded(PolygonSimulator(_sim_config())) as sim, watching(own_redis_server.url) as w:
        a, b = await _active_with_standby(sim, own_redis_server.url, tmp_path)
        try:
            await asyncio.sleep(1.0)
            killed = time.monotonic()
            a.proc.send_signal(signal.SIGKILL)
            await asyncio.wait_for(a.proc.wait(), 10)
            await b.wait_role("active", within_s=TTL_MS / 1000 + 5)
            await asyncio.sleep(1.5)
            gap = w.max_gap_after(killed)
            print(f"SIGKILL: longest write gap {gap:.3f} s (lease TTL {TTL_MS} ms)")
            assert gap <= TTL_MS / 1000 + 2.0
            assert w.expired == [] and w.rolled_back == []
            _one_connection_per_host(sim)
        finally:
            await _stop(a, b)


async def test_a_paused_active_is_fenced_and_writes_nothing_after_resuming(
    own_redis_server, tmp_path
) -> None:
    """SIGSTOP for twice the TTL: the standby takes over; on SIGCONT the old task finds its
    fencing deadline passed, drops its feeds and sends no new batch (one it had begun
    before the pause may still arrive; the script refuses it and the task logs so). The
    simulator drops a client that does not answer its pings within 0.5 s (as a server
    must, for the paused task cannot close its own sockets), before the lease can expire."""
    ttl_ms = 2000
    config = _sim_config(ping_interval_s=0.2, ping_timeout_s=0.3, close_timeout_s=0.2)
    async with bounded(PolygonSimulator(config)) as sim, watching(own_redis_server.url) as w:
        with Monitor(own_redis_server.url) as monitor:
            a, b = await _active_with_standby(sim, own_redis_server.url, tmp_path, ttl_ms)
            try:
                await asyncio.sleep(1.0)
                assert monitor.fenced_batches(a.pid)
                paused = time.monotonic()
                os.kill(a.pid, signal.SIGSTOP)
                await b.wait_role("active", within_s=ttl_ms / 1000 + 5)
                await asyncio.sleep(max(2 * ttl_ms / 1000 - (time.monotonic() - paused), 0))
                successor_began = min(monitor.fenced_batches(b.pid))
                resumed = time.monotonic()
                os.kill(a.pid, signal.SIGCONT)
                await a.wait_role("standby", within_s=5)
                await asyncio.sleep(1.0)
                # A batch the task had begun before the pause (past its own deadline
                # check) reaches Redis after the successor's first: the script refuses it.
                late = monitor.fenced_batches(a.pid, after=successor_began)
                refused = a.log.read_text().count("the lease is held by another task")
                assert len(late) <= 1 and refused == len(late), (late, refused)
                assert monitor.fenced_batches(b.pid, after=resumed)  # the successor writes
                status, body = await b.health()
                assert status == 200 and body["role"] == "active"
                assert w.rolled_back == []
                _one_connection_per_host(sim)
                gap = w.max_gap_after(paused)
                print(f"SIGSTOP: longest write gap {gap:.3f} s (lease TTL {ttl_ms} ms)")
                assert gap <= ttl_ms / 1000 + 2.0
            finally:
                await _stop(a, b)


async def test_rolling_deploy_through_upstash(own_redis_server, tmp_path) -> None:
    async with (
        bounded(UpstashServer(own_redis_server.url, "ha-token")) as upstash,
        bounded(PolygonSimulator(_sim_config())) as sim,
        watching(own_redis_server.url) as w,
    ):
        base = upstash.url
        extra = {"REDIS_TOKEN": "ha-token", "REDIS_FLUSH_INTERVAL_MS": "100"}
        a, b = await _active_with_standby(sim, base, tmp_path, **extra)
        try:
            await asyncio.sleep(1.0)
            await _hand_over(a, b, w, sim, "Upstash rolling deploy")
            assert upstash.stats.commands > 0
        finally:
            await _stop(a, b)


async def test_with_s3_a_standby_touches_nothing_and_a_successor_waits_out_the_grace(
    own_redis_server, s3: MotoS3Server, tmp_path
) -> None:
    """With the archive: a standby runs no recovery in S3 (before, its start-up recovery
    completed the active task's open uploads: found by the soak); the task that takes over
    finishes another writer's open upload only ``SHUTDOWN_TIMEOUT_SEC`` after its term
    began (the predecessor may still be completing it), not at once."""
    bucket, grace_s = unique_bucket("ha"), 4.0
    theirs = "raw/channel=T/ingest_dt=2025/05/07/hour=10/part=x/c-host-seq=000001.ndjson"
    archive = {"S3_ENABLED": "true", "S3_BUCKET": bucket, "S3_PREFIX": "raw", **s3.env()}
    archive["SHUTDOWN_TIMEOUT_SEC"] = str(int(grace_s))
    async with (
        open_s3_client(s3.region, s3.endpoint_url, session=s3.aio_session()) as client,
        bounded(PolygonSimulator(_sim_config())) as sim,
        watching(own_redis_server.url) as w,
    ):
        await client.create_bucket(Bucket=bucket)

        async def still_open() -> bool:
            found = await client.list_multipart_uploads(Bucket=bucket)
            return any(u["Key"] == theirs for u in found.get("Uploads", []))

        env = service_env(sim, own_redis_server.url, TTL_MS, **archive)
        a = await start_task({**env, "S3_HOSTNAME": "a-host"}, tmp_path, "a")
        b: Task | None = None
        try:
            await a.wait_role("active")
            done = "S3 archive recovery (other writers' uploads)"
            await eventually(lambda: done in a.log.read_text(), grace_s + 10)
            upload = await client.create_multipart_upload(Bucket=bucket, Key=theirs)
            await client.upload_part(
                Bucket=bucket, Key=theirs, UploadId=upload["UploadId"], PartNumber=1, Body=b"{}\n"
            )
            b = await start_task({**env, "S3_HOSTNAME": "b-host"}, tmp_path, "b")
            await b.wait_role("standby")
            await asyncio.sleep(grace_s + 1.5)
            assert await still_open()
            assert "S3 archive recovery" not in b.log.read_text()
            await _hand_over(a, b, w, sim, "rolling deploy with S3")
            assert await still_open()  # 1.5 s into the term: within the grace
            await eventually(lambda: done in b.log.read_text(), grace_s + 5)
            assert not await still_open()
            assert f"{done}: 1 uploads completed" in b.log.read_text()
        finally:
            await _stop(a, *([b] if b else []))


async def test_an_active_cut_off_from_redis_fences_itself_first(own_redis_server, tmp_path) -> None:
    """The active's Redis connections go silent (a NAT drops the flows: no FIN, no RST;
    new connections still work): its renewal gets no answer, so at its fencing deadline it
    drops both feeds, before the lease can expire and the standby connect. The simulator
    does not help here (pings every 20 s): the fence alone keeps one connection per host."""
    from bench.soak.proxy import TcpProxy

    proxy = TcpProxy(own_redis_server.port)
    await proxy.up()
    via_proxy = f"redis://127.0.0.1:{proxy.port}/0"
    async with bounded(PolygonSimulator(_sim_config())) as sim, watching(own_redis_server.url) as w:
        a = await start_task(service_env(sim, via_proxy, TTL_MS), tmp_path, "a")
        await a.wait_role("active")
        b = await start_task(service_env(sim, own_redis_server.url, TTL_MS), tmp_path, "b")
        await b.wait_role("standby")
        try:
            await asyncio.sleep(1.0)
            cut = time.monotonic()
            assert proxy.silence() > 0
            await eventually(lambda: "before its fencing deadline" in a.log.read_text(), 10)
            await asyncio.sleep(2.0)
            roles = [(await t.health())[1].get("role") for t in (a, b)]
            assert sorted(roles) == ["active", "standby"], roles
            _one_connection_per_host(sim)
            assert w.rolled_back == [] and w.expired == []
            gap = w.max_gap_after(cut)
            print(f"partition: longest write gap {gap:.3f} s (lease TTL {TTL_MS} ms), {roles}")
            assert gap <= TTL_MS / 1000 + 2.0
        finally:
            await _stop(a, b)
            await proxy.down()


async def test_redis_down_past_the_fencing_deadline_the_held_values_are_written(
    own_redis_server, tmp_path
) -> None:
    """Redis is killed for three lease TTLs and comes back empty (no persistence). The
    active fences itself holding what it could not write; the standby, holding nothing,
    lets it claim the lease first; in its new term it writes the held values (through the
    latest-wins script) before new events arrive, so keys of symbols that went quiet come
    back. Told apart by event time: a held trade or quote is from before the kill, a new
    one from after the restart, seconds later."""
    import redis.asyncio as aredis
    from bench.service_task import event_time

    quick = [k for k in KEYS if k.startswith(("stock:trade:", "stock:quote:"))]
    url = own_redis_server.url
    async with bounded(PolygonSimulator(_sim_config())) as sim:
        a, b = await _active_with_standby(sim, url, tmp_path)
        client = aredis.Redis.from_url(url, socket_timeout=1.0)
        try:
            await asyncio.sleep(1.0)
            before = dict(zip(quick, await client.mget(quick), strict=True))
            assert None not in before.values(), before
            own_redis_server.kill()
            await eventually(lambda: "before its fencing deadline" in a.log.read_text(), 10)
            await asyncio.sleep(2.0)
            await client.aclose()
            own_redis_server.start()
            client = aredis.Redis.from_url(url, socket_timeout=1.0)
            first: dict[str, bytes] = {}
            deadline = time.monotonic() + 10
            while len(first) < len(quick) and time.monotonic() < deadline:
                for key, raw in zip(quick, await client.mget(quick), strict=True):
                    if raw is not None:
                        first.setdefault(key, raw)
                await asyncio.sleep(0.002)
            await a.wait_role("active", within_s=5)
            status, body = await b.health()
            assert status == 200 and body["role"] == "standby", body
            held = [k for k, raw in first.items() if event_time(raw) - event_time(before[k]) < 1000]
            print(f"Redis down 3 s: {len(held)} of {len(quick)} keys came back with held values")
            assert "values held from the last term; 0 past their TTL dropped" in a.log.read_text()
            assert "polygon_held_expired_total 0.0" in await a.metrics()
            assert len(held) >= len(quick) // 2, (first, before)
            _one_connection_per_host(sim)
        finally:
            await client.aclose()
            await _stop(a, b)
