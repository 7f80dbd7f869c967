"""Carries out the schedule of :mod:`bench.soak.plan` and records when each outage began and
ended. An outage of the feed ends when the simulator sees that host authenticated again."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

from bench.soak.plan import Fault
from bench.soak.world import World
from polygon_sim.truth import ConnectionEventKind

__all__ = ["Chaos", "Outage"]

FEED_KINDS = ("drop", "drop_abrupt", "evict", "auth_burst", "feed_silent")


@dataclass
class Outage:
    kind: str
    host: str | None
    began: float
    """``time.time()``."""
    ended: float | None = None
    hits: int = 0
    """Connections the switch closed (feed faults)."""

    @property
    def seconds(self) -> float | None:
        return None if self.ended is None else self.ended - self.began


@dataclass
class Chaos:
    world: World
    outages: list[Outage] = field(default_factory=list)
    bad_frames: Counter[str] = field(default_factory=Counter)
    kills: Counter[str] = field(default_factory=Counter)
    """Connections closed by the simulator, per host (each must be one reconnect)."""
    auth_rejects: int = 0
    errors: list[str] = field(default_factory=list)

    async def run(self, schedule: list[Fault], started: float) -> None:
        """Start each fault at ``started + fault.at_s``; return once every one is over."""
        tasks = []
        for fault in schedule:
            delay = started + fault.at_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self._one(fault)))
        await asyncio.gather(*tasks)

    async def _one(self, fault: Fault) -> None:
        try:
            if fault.outage:
                await self._outage(fault)
            else:
                self._bad_frame(fault)
        except Exception as exc:  # noqa: BLE001 - a failed fault is a finding, not a crash
            self.errors.append(f"{fault.kind} at {fault.at_s:.1f} s: {exc!r}")

    def _bad_frame(self, fault: Fault) -> None:
        faults, host, p = self.world.sim.faults, fault.host, fault.params
        if fault.kind == "garbage":
            faults.garbage(str(p["garbage"]), host)
            self.bad_frames[f"garbage:{p['garbage']}"] += 1
        elif fault.kind == "oversize":
            faults.oversize(int(str(p["size_bytes"])), host)
            self.bad_frames["oversize"] += 1
        elif fault.kind == "out_of_order":
            count = int(str(p["count"]))
            faults.out_of_order(host, count)
            self.bad_frames["out_of_order"] += count

    async def _outage(self, fault: Fault) -> None:
        world = self.world
        outage = Outage(fault.kind, fault.host, time.time())
        self.outages.append(outage)
        if fault.kind == "redis_down":
            await asyncio.to_thread(world.redis.kill)
            await asyncio.sleep(float(str(fault.params["down_s"])))
            await asyncio.to_thread(world.redis.start)
            outage.ended = time.time()
            return
        if fault.kind == "redis_failover":
            # The managed procedure; the outage "ends" when the name has moved.
            await asyncio.to_thread(world.pair.wait_in_sync)
            await asyncio.to_thread(world.pair.failover, world.name)
            outage.ended = time.time()
            return
        if fault.kind == "s3_down":
            assert world.proxy is not None
            await world.proxy.down()
            await asyncio.sleep(float(str(fault.params["down_s"])))
            await world.proxy.up()
            outage.ended = time.time()
            return
        assert fault.host is not None and fault.kind in FEED_KINDS
        faults = world.sim.faults
        if fault.kind == "feed_silent":  # the proxy stops forwarding; the sockets stay open
            assert fault.host == "delayed" and world.feed_proxy is not None
            outage.hits = await world.feed_proxy.silence()
        elif fault.kind == "drop":
            outage.hits = faults.drop(fault.host, code=1000)
        elif fault.kind == "drop_abrupt":
            outage.hits = faults.drop_abruptly(fault.host)
        elif fault.kind == "evict":
            outage.hits = faults.evict(fault.host)
        else:
            attempts = int(str(fault.params["attempts"]))
            faults.reject_auth(attempts)
            self.auth_rejects += attempts
            outage.hits = faults.drop(fault.host, code=1000)
        self.kills[fault.host] += outage.hits
        if outage.hits == 0:
            raise RuntimeError(f"no open connection on {fault.host} to act on")
        outage.ended = await self._reauthenticated(fault.host, outage.began, fault.reserve_s + 30)

    async def _reauthenticated(self, host: str, after: float, timeout_s: float) -> float:
        log = self.world.sim.truth.log
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for event in reversed(log):
                if event.at_s <= after:
                    break
                if event.kind is ConnectionEventKind.AUTHENTICATED and event.host.value == host:
                    return event.at_s
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{host} not authenticated again within {timeout_s:.0f} s")
