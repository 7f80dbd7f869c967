"""Real processes for the leader-lease tests: the service as subprocesses against the
simulator (which counts authenticated connections per host), a watcher that polls Redis
for write gaps, expiries and rollbacks, and a MONITOR that tells which task sent what."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import redis
import redis.asyncio as aredis

from tests.redis_servers import free_port

API_KEY = "ha-key-7d1e"
SYMBOLS = ("AAPL", "MSFT", "TSLA", "BRK.B")
FAMILIES = ("agg1m", "fmv", "trade", "quote")
KEYS = [f"stock:{f}:{s}" for f in FAMILIES for s in SYMBOLS]
FENCED_MARK = "local written"  # a phrase of the fenced batch script (lease_scripts.py)


@dataclass
class Task:
    proc: asyncio.subprocess.Process
    health_port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def health(self) -> tuple[int, dict]:
        url = f"http://127.0.0.1:{self.health_port}/healthz"
        try:
            timeout = aiohttp.ClientTimeout(total=2)
            async with aiohttp.ClientSession(timeout=timeout) as s, s.get(url) as r:
                return r.status, await r.json()
        except (aiohttp.ClientError, OSError, TimeoutError):
            return 0, {}

    async def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.health_port}/metrics"
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as s, s.get(url) as r:
            return await r.text()

    async def wait_role(self, role: str, within_s: float = 15.0) -> None:
        async with asyncio.timeout(within_s):
            while True:
                status, body = await self.health()
                if status == 200 and body.get("role") == role:
                    return
                await asyncio.sleep(0.05)


async def start_task(env: dict[str, str], directory: Path, name: str) -> Task:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("POLYGON_", "REDIS_", "S3_", "AWS_", "HA_"))
    }
    port = free_port()
    log = directory / f"{name}.log"
    with log.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "polygon_runner",
            "run",
            env={**base, **env, "HEALTH_PORT": str(port)},
            cwd=directory,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
        )
    return Task(proc, port, log)


def service_env(sim: object, redis_url: str, ttl_ms: int, **extra: str) -> dict[str, str]:
    return {
        "POLYGON_API_KEY": API_KEY,
        "POLYGON_WS_SYMBOLS": ",".join(SYMBOLS),
        "POLYGON_DISCOVER_TICKERS": "false",
        "POLYGON_WS_HOST_REALTIME": sim.realtime_url,  # type: ignore[attr-defined]
        "POLYGON_WS_HOST_DELAYED": sim.delayed_url,  # type: ignore[attr-defined]
        "REDIS_URL": redis_url,
        "HA_ENABLED": "true",
        "HA_LEASE_TTL_MS": str(ttl_ms),
        "WS_HEALTH_INTERVAL_SEC": "1",
        "BACKOFF_INITIAL_MS": "50",
        "SHUTDOWN_TIMEOUT_SEC": "10",
        "LOG_FORMAT": "text",
        **extra,
    }


def event_time(raw: bytes) -> float:
    record = json.loads(raw)
    return float(record["start"] if "start" in record else record["ts"])


@dataclass
class Watcher:
    """Polls every key every few ms: the longest time no key changed, keys that vanished
    (expired), and keys whose event time went backwards."""

    url: str
    gaps: list[tuple[float, float]] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    rolled_back: list[tuple[str, float, float]] = field(default_factory=list)
    last_change: float | None = None
    changes: int = 0
    _seen: dict[str, bytes] = field(default_factory=dict)

    async def run(self) -> None:
        client = aredis.Redis.from_url(self.url)
        try:
            while True:
                values = await client.mget(KEYS)
                now = time.monotonic()
                changed = False
                for key, raw in zip(KEYS, values, strict=True):
                    old = self._seen.get(key)
                    if raw is None:
                        if old is not None:
                            self.expired.append(key)
                        continue
                    if raw != old:
                        changed = True
                        if old is not None and event_time(raw) < event_time(old):
                            self.rolled_back.append((key, event_time(old), event_time(raw)))
                        self._seen[key] = raw
                if changed:
                    self.changes += 1
                    if self.last_change is not None:
                        self.gaps.append((self.last_change, now - self.last_change))
                    self.last_change = now
                await asyncio.sleep(0.005)
        finally:
            await client.aclose()

    def max_gap_after(self, t: float) -> float:
        """The longest stretch without a change that ended after ``t`` (the one still open
        now included)."""
        gaps = [g for start, g in self.gaps if start + g >= t]
        if self.last_change is not None:
            gaps.append(time.monotonic() - self.last_change)
        return max(gaps, default=0.0)


class Monitor:
    """Redis MONITOR in a thread: (time, client addr, is a fenced batch) per EVAL, and the
    client names (``polygon-sink-<pid>``) by address from CLIENT LIST, polled."""

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url)
        self._admin = redis.Redis.from_url(url)
        self.evals: list[tuple[float, str, bool]] = []
        self.names: dict[str, str] = {}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._watch, daemon=True),
            threading.Thread(target=self._names, daemon=True),
        ]

    def __enter__(self) -> Monitor:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads[1:]:
            t.join(timeout=2)

    def _watch(self) -> None:
        try:
            self._listen()
        except (redis.ConnectionError, OSError, ValueError):
            if not self._stop.is_set():
                raise

    def _listen(self) -> None:
        with self._client.monitor() as m:
            for item in m.listen():
                if self._stop.is_set():
                    return
                command = item.get("command", "")
                if command.upper().startswith("EVAL "):
                    addr = f"{item.get('client_address')}:{item.get('client_port')}"
                    self.evals.append((time.monotonic(), addr, FENCED_MARK in command))

    def _names(self) -> None:
        while not self._stop.is_set():
            for c in self._admin.client_list():
                if c.get("name", "").startswith("polygon-sink-"):
                    self.names[c["addr"]] = c["name"]
            time.sleep(0.05)

    def fenced_batches(self, pid: int, after: float = 0.0) -> list[float]:
        """Send times (monotonic, as MONITOR reported them to us) of fenced batches from
        the task ``pid`` after ``after``."""
        name = f"polygon-sink-{pid}"
        return [
            t
            for t, addr, fenced in self.evals
            if fenced and t > after and self.names.get(addr) == name
        ]
