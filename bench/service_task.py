"""The service as a child process (``python -m polygon_runner run``) and a Redis watcher for
write gaps, expiries and rollbacks: shared by the leader-lease tests
(tests/runner/ha_harness.py) and the soak's handover and SIGKILL faults (bench/soak)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aredis
from redis.exceptions import RedisError

__all__ = ["ServiceTask", "WriteWatcher", "event_time", "spawn_service"]

FOREIGN_ENV = ("POLYGON_", "REDIS_", "S3_", "AWS_", "HA_", "SIMULATOR_")
"""Variables of ours in the caller's environment: never passed on to the child."""


@dataclass
class ServiceTask:
    proc: asyncio.subprocess.Process
    health_port: int
    log: Path
    name: str = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def health(self) -> tuple[int, dict[str, Any]]:
        """``/healthz`` (status, body); (0, {}) when it does not answer."""
        url = f"http://127.0.0.1:{self.health_port}/healthz"
        try:
            timeout = aiohttp.ClientTimeout(total=2)
            async with aiohttp.ClientSession(timeout=timeout) as s, s.get(url) as r:
                return r.status, await r.json()
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            return 0, {}

    async def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.health_port}/metrics"
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as s, s.get(url) as r:
            return await r.text()

    async def wait_role(self, role: str, within_s: float = 15.0) -> None:
        """Until ``/healthz`` answers 200 with this role (``TimeoutError`` after
        ``within_s``; ``RuntimeError`` if the process exits meanwhile)."""
        async with asyncio.timeout(within_s):
            while True:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"task {self.name} exited with {self.proc.returncode}")
                status, body = await self.health()
                if status == 200 and body.get("role") == role:
                    return
                await asyncio.sleep(0.05)


async def spawn_service(
    env: dict[str, str], directory: Path, name: str, health_port: int, *, both_to_log: bool = False
) -> ServiceTask:
    """Start ``python -m polygon_runner run`` with ``env`` (and none of the caller's own
    settings), stderr (and stdout with ``both_to_log``) appended to ``directory/<name>.log``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_ENV)}
    log = directory / f"{name}.log"
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "polygon_runner",
            "run",
            env={**base, **env, "HEALTH_PORT": str(health_port)},
            cwd=directory,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out if both_to_log else asyncio.subprocess.DEVNULL,
            stderr=out,
        )
    return ServiceTask(proc, health_port, log, name)


def event_time(raw: bytes) -> float:
    record = json.loads(raw)
    return float(record["start"] if "start" in record else record["ts"])


@dataclass
class WriteWatcher:
    """Polls ``keys`` every ``interval_s``: when any of them last changed (the gaps between
    changes), keys that vanished (expired) and keys whose event time went backwards. A
    Redis error (the server down, a failover) forgets what was seen: a server restarted
    empty has lost its keys, which is no expiry."""

    url: str
    keys: Sequence[str]
    interval_s: float = 0.005
    clock: Callable[[], float] = time.monotonic
    """What the times below are read from (the soak uses ``time.time``)."""
    changes_at: list[float] = field(default_factory=list)
    """``clock()`` of every poll that saw a change."""
    expired: list[tuple[float, str]] = field(default_factory=list)
    rolled_back: list[tuple[str, float, float]] = field(default_factory=list)
    errors: int = 0
    _seen: dict[str, bytes] = field(default_factory=dict)

    @property
    def changes(self) -> int:
        return len(self.changes_at)

    @property
    def last_change(self) -> float | None:
        return self.changes_at[-1] if self.changes_at else None

    async def run(self) -> None:
        client = aredis.Redis.from_url(self.url, socket_timeout=1.0)
        keys = list(self.keys)
        try:
            while True:
                try:
                    values = await client.mget(keys)
                except (RedisError, OSError):
                    self.errors += 1
                    self._seen.clear()
                    await asyncio.sleep(0.1)
                    continue
                self._compare(keys, values, self.clock())
                await asyncio.sleep(self.interval_s)
        finally:
            await client.aclose()

    def _compare(self, keys: list[str], values: list[Any], now: float) -> None:
        changed = False
        for key, raw in zip(keys, values, strict=True):
            old = self._seen.get(key)
            if raw is None:
                if old is not None:
                    self.expired.append((now, key))
                    del self._seen[key]
                continue
            if raw != old:
                changed = True
                if old is not None and event_time(raw) < event_time(old):
                    self.rolled_back.append((key, event_time(old), event_time(raw)))
                self._seen[key] = raw
        if changed:
            self.changes_at.append(now)

    def max_gap_after(self, t: float) -> float:
        """The longest stretch without a change that ended after ``t`` (the one still open
        now included)."""
        return self.max_gap_between(t, self.clock())

    def max_gap_between(self, start: float, end: float) -> float:
        """The longest stretch without a change that overlaps ``[start, end]`` (``clock``);
        one still open at ``end`` counts up to ``end``."""
        times = self.changes_at
        if not times:
            return end - start
        gaps = [b - a for a, b in zip(times, times[1:], strict=False) if b >= start and a <= end]
        if times[-1] <= end:
            gaps.append(end - times[-1])
        return max(gaps, default=0.0)

    def expired_between(self, start: float, end: float) -> list[str]:
        return [key for at, key in self.expired if start <= at <= end]
