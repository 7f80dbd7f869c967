"""What the soak watches while it runs: the service's ``/metrics`` (10 times a second), a
sample of Redis keys (never going back in event time), and the service's memory."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bench.expected import KEY_PREFIX
from bench.service_task import ServiceTask
from bench.soak.world import World

__all__ = ["MetricsPoller", "RollbackWatcher", "RssSampler", "Sample", "parse_metrics"]


def parse_metrics(text: str) -> dict[str, float]:
    """``{'name{labels}': value}`` of a Prometheus text page (comments skipped)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and line[0] != "#":
            head, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[head] = float(value)
    return out


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    """``time.time()`` when the scrape answered."""
    values: dict[str, float]

    def get(self, name: str, default: float = 0.0) -> float:
        return self.values.get(name, default)

    def events(self, channel: str) -> float:
        return self.get(f'polygon_events_total{{channel="{channel}"}}')

    def lag(self, channel: str) -> float:
        return self.get(f'polygon_lag_seconds{{channel="{channel}"}}', float("inf"))


CUMULATIVE = (
    "polygon_archive_lines_appended",
    "polygon_archive_parts_uploaded",
    "polygon_archive_dropped_lines",
    "polygon_archive_lost_lines",
)
"""Archive figures that only grow (gauges on the page; counters end in ``_total``)."""


def cumulative(name: str) -> bool:
    base = name.split("{", 1)[0]
    return base.endswith("_total") or base in CUMULATIVE


class MetricsPoller:
    """Scrapes every live task. A sample's counters are the sums over all tasks (each
    task's last page; a stopped task's stay as it last answered), its gauges (lag, keys
    pending, buffers) the active task's: one service, whichever task holds the lease."""

    def __init__(self, world: World, interval_s: float = 0.1) -> None:
        self.world = world
        self.interval_s = interval_s
        self.samples: list[Sample] = []
        self.failures = 0
        self.per_task: dict[str, dict[str, float]] = {}
        """Each task's last page."""

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=2.0)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                live = [t for t in self.world.tasks if t.proc.returncode is None]
                await asyncio.gather(*(self._scrape(session, t) for t in live))
                active = self.world.active
                if active is not None and active in live and active.name in self.per_task:
                    self.samples.append(Sample(time.time(), self._combined(active.name)))
                await asyncio.sleep(self.interval_s)

    async def _scrape(self, session: aiohttp.ClientSession, task: ServiceTask) -> None:
        url = f"http://127.0.0.1:{task.health_port}/metrics"
        try:
            async with session.get(url) as response:
                text = await response.text()
            self.per_task[task.name] = parse_metrics(text)
        except (aiohttp.ClientError, OSError, TimeoutError):
            if task is self.world.active:
                self.failures += 1

    def _combined(self, active: str) -> dict[str, float]:
        out = {k: v for k, v in self.per_task[active].items() if not cumulative(k)}
        for page in self.per_task.values():
            for k, v in page.items():
                if cumulative(k):
                    out[k] = out.get(k, 0.0) + v
        return out

    def latest(self) -> Sample:
        return self.samples[-1]

    def since(self, at: float) -> list[Sample]:
        return [s for s in self.samples if s.at >= at]

    def before(self, at: float) -> Sample | None:
        earlier = [s for s in self.samples if s.at < at]
        return earlier[-1] if earlier else None


@dataclass
class RollbackWatcher:
    """Samples random keys and records any key whose event time went backwards. A key that
    vanished (Redis restarted empty, or its TTL ran out) is no rollback; when it comes back
    its event time must not be older than the last one seen."""

    world: World
    symbols: Sequence[str]
    batch: int = 200
    interval_s: float = 0.05
    reads: int = 0
    errors: int = 0
    rollbacks: list[str] = field(default_factory=list)
    _seen: dict[str, tuple[int, ...]] = field(default_factory=dict)

    async def run(self) -> None:
        rng = random.Random(0)
        keys = [prefix + s for prefix in KEY_PREFIX.values() for s in self.symbols]
        client = aioredis.Redis.from_url(self.world.redis_url, socket_timeout=0.5)
        try:
            while True:
                chosen = rng.sample(keys, min(self.batch, len(keys)))
                try:
                    values = await client.mget(chosen)
                except (RedisError, OSError):
                    self.errors += 1
                    await asyncio.sleep(0.2)
                    continue
                self.reads += 1
                for key, raw in zip(chosen, values, strict=True):
                    if raw is not None:
                        self._check(key, raw)
                await asyncio.sleep(self.interval_s)
        finally:
            await client.aclose()

    def _check(self, key: str, raw: bytes) -> None:
        record = json.loads(raw)
        # AM: the bar start; a correction of the same bar has the same start.
        when = (record["start"],) if key.startswith("stock:agg1m:") else (record["ts"],)
        last = self._seen.get(key)
        if last is not None and when < last:
            self.rollbacks.append(f"{key}: {last[0]} -> {when[0]}")
        if last is None or when > last:
            self._seen[key] = when

    @property
    def keys_seen(self) -> int:
        return len(self._seen)


@dataclass
class RssSampler:
    """The memory of the active task (whichever it is at each sample)."""

    world: World
    interval_s: float = 1.0
    samples: list[tuple[float, int]] = field(default_factory=list)
    peak: int = 0
    """The highest ``VmHWM`` of any task sampled."""

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval_s)

    def sample(self) -> None:
        """Read ``VmRSS`` and ``VmHWM`` of the process (a /proc read: no real I/O)."""
        if self.world.active is None:
            return
        with contextlib.suppress(OSError, KeyError):  # KeyError: a zombie has no VmRSS
            text = Path(f"/proc/{self.world.active.pid}/status").read_text()
            fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
            self.peak = max(self.peak, int(fields["VmHWM"].split()[0]) * 1024)
            self.samples.append((time.time(), int(fields["VmRSS"].split()[0]) * 1024))
