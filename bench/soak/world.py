"""Everything the soak runs: a private ``redis-server`` pair (primary and replica, with a
password, reached through a name that moves on failover), moto's S3 server
behind a proxy process (:class:`ProxyProcess`), the simulator (in this process, so its
fault switches and its ground truth are at hand) with a second proxy process in front of
its delayed host (which can go silent), and the service (``python -m polygon_runner run``,
a child)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import boto3

from bench.expected import bench_symbols
from bench.procs import Child, start_child, wait_port
from bench.redis_failover import MovingName, RedisFailoverPair
from bench.service_task import ServiceTask, spawn_service
from bench.soak.plan import SoakConfig
from bench.soak.proxy import ProxyProcess
from polygon_sim.server import PolygonSimulator, SimulatorConfig
from polygon_testing.local_redis import RedisServerProcess, free_port

__all__ = ["BUCKET", "PREFIX", "World"]

BUCKET = "soak"
PREFIX = "raw"
REGION = "us-east-1"
TTL_S = {"AM": 120, "FMV": 60, "T": 60, "Q": 60}
"""The service's default TTLs (SPEC §2), which the soak leaves as they are."""
S3_NICE = 10
"""moto and its proxy run at this niceness. In production S3 is not on the task's CPU; on
two cores, moto taking in a 10 s outage's backlog (130 MB at 50,000 events/s) at full
priority took the CPU the service and the simulator need (a CI run saw Redis lag at
3.2 s for 3 s after S3 came back). Niced, it gets what they leave."""


class World:
    def __init__(self, cfg: SoakConfig, workdir: Path) -> None:
        self.cfg = cfg
        self.workdir = workdir
        self.symbols = bench_symbols(cfg.symbols)
        # Secrets the service gets and must never log (checked at the end).
        self.api_key = "pk_" + secrets.token_hex(12)
        self.redis_password = "rp_" + secrets.token_hex(12)
        self.aws_secret = "as_" + secrets.token_hex(16)
        # A primary and its replica (127.0.0.2, 127.0.0.3) behind a name that moves on a
        # failover, as a managed primary endpoint; without a writable hosts file the
        # service gets the primary's address and the schedule has no failover.
        self.pair = RedisFailoverPair(password=self.redis_password)
        self.name = MovingName() if cfg.redis_failover else None
        self.moto: Child | None = None
        self.proxy: ProxyProcess | None = None
        self.feed_proxy: ProxyProcess | None = None
        """Between the service and the simulator's delayed host: it can go silent."""
        self.sim = PolygonSimulator(
            SimulatorConfig(
                api_key=self.api_key,
                symbols=self.symbols,
                market="realistic" if cfg.market == "realistic" else "flat",
                events_per_second=(
                    cfg.events_per_second
                    if cfg.market == "realistic"
                    else cfg.events_per_second / 2  # per host
                ),
                session="open",
                session_speed=cfg.session_speed,
                track_latest=True,
                wall_clock=True,
                auth_timeout_s=None,
            )
        )
        self.tasks: list[ServiceTask] = []
        """Every service task started, in order (more than one with the HA faults)."""
        self.active: ServiceTask | None = None
        """The task the soak measures: the first, then each that took over the lease."""
        self.stopping: set[str] = set()
        """Tasks the chaos schedule stopped on purpose (their exit is no failure)."""
        self.service_started = 0.0
        """``time.time()`` when the service was first spawned."""

    @property
    def service(self) -> asyncio.subprocess.Process | None:
        return self.active.proc if self.active is not None else None

    @property
    def health_port(self) -> int:
        assert self.active is not None
        return self.active.health_port

    @property
    def redis(self) -> RedisServerProcess:
        """The current primary."""
        return self.pair.primary

    @property
    def redis_url(self) -> str:
        host = self.name.name if self.name is not None else self.pair.primary.host
        return f"redis://:{self.redis_password}@{host}:{self.pair.port}/0"

    @property
    def secrets(self) -> dict[str, str]:
        return {
            "POLYGON_API_KEY": self.api_key,
            "Redis password": self.redis_password,
            "AWS_SECRET_ACCESS_KEY": self.aws_secret,
        }

    async def start(self) -> None:
        await asyncio.to_thread(self.pair.start)
        if self.name is not None:
            self.name.point(self.pair.primary.host)
        await self._start_s3()
        await self.sim.start()
        self.feed_proxy = ProxyProcess(int(self.sim.delayed_url.rsplit(":", 1)[1]))
        await self.feed_proxy.start()
        if self.cfg.s3_down_at_start_s > 0:
            assert self.proxy is not None
            await self.proxy.down()  # S3 unreachable at start; run.py brings it back
        self.service_started = time.time()
        await self.start_service()

    async def _start_s3(self) -> None:
        port = free_port()
        argv = ["nice", "-n", str(S3_NICE), sys.executable, "-m", "moto.server"]
        argv += ["-H", "127.0.0.1", "-p", str(port)]
        self.moto = start_child("moto", argv, self.workdir)
        await asyncio.to_thread(wait_port, port, 30.0, self.moto)
        self.proxy = ProxyProcess(port, nice=S3_NICE)
        await self.proxy.start()
        await asyncio.to_thread(self.s3().create_bucket, Bucket=BUCKET)

    def s3(self) -> Any:
        """A boto3 client straight to moto (not through the proxy)."""
        assert self.moto is not None and self.proxy is not None
        return boto3.client(
            "s3",
            region_name=REGION,
            endpoint_url=f"http://127.0.0.1:{self.proxy.upstream_port}",
            aws_access_key_id="soak",
            aws_secret_access_key=self.aws_secret,
        )

    def service_env(self, name: str) -> dict[str, str]:
        """The service's settings; each task archives under its own hostname, as each ECS
        task has its own (objects never collide, the archive check counts them per task)."""
        assert self.proxy is not None and self.feed_proxy is not None
        ha = {"HA_ENABLED": "true", "HA_LEASE_TTL_MS": str(self.cfg.lease_ttl_ms)}
        return {
            "POLYGON_API_KEY": self.api_key,
            "POLYGON_WS_SYMBOLS": ",".join(self.symbols),
            "POLYGON_DISCOVER_TICKERS": "false",
            "POLYGON_WS_HOST_REALTIME": self.sim.realtime_url,
            "POLYGON_WS_HOST_DELAYED": f"ws://127.0.0.1:{self.feed_proxy.port}",
            "REDIS_URL": self.redis_url,
            **(ha if self.cfg.ha else {}),
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
            "MALLOC_MMAP_THRESHOLD_": "131072",
            "SHUTDOWN_TIMEOUT_SEC": str(self.cfg.shutdown_timeout_s),
            "S3_ENABLED": "true",
            "S3_BUCKET": BUCKET,
            "S3_PREFIX": PREFIX,
            "S3_HOSTNAME": f"soak-{name}",
            "S3_ENDPOINT_URL": f"http://127.0.0.1:{self.proxy.port}",
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "soak",
            "AWS_SECRET_ACCESS_KEY": self.aws_secret,
        }

    async def start_service(self) -> ServiceTask:
        """One more task (``a``, ``b``, ...); the first is the active one."""
        name = "abcdefghijklmnopqrstuvwxyz"[len(self.tasks)]
        env = self.service_env(name)
        task = await spawn_service(
            env, self.workdir, f"service-{name}", free_port(), both_to_log=True
        )
        task.name = name
        self.tasks.append(task)
        if self.active is None:
            self.active = task
        return task

    async def get(self, path: str, timeout_s: float = 2.0) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.health_port}{path}"
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as r:
            return r.status, await r.text()

    async def wait_healthy(self, timeout_s: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            assert self.service is not None
            if self.service.returncode is not None:
                raise RuntimeError(f"the service exited with {self.service.returncode}")
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                status, _ = await self.get("/healthz")
                if status == 200:
                    return
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("the service did not become healthy")
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        for task in self.tasks:
            if task.proc.returncode is None:
                task.proc.kill()
                await task.proc.wait()
        await self.sim.stop()
        for proxy in (self.proxy, self.feed_proxy):
            if proxy is not None:
                await proxy.stop()
        if self.moto is not None:
            self.moto.stop()
        await asyncio.to_thread(self.pair.stop)
        if self.name is not None:
            self.name.remove()
