"""Carries out the schedule of :mod:`bench.soak.plan` and records when each outage began and
ended. An outage of the feed ends when the simulator sees that host authenticated again."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from dataclasses import dataclass, field

from bench.soak.plan import HOLD_S, Fault
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
    task: str | None = None
    """Handover and SIGKILL: the task stopped (its successor is the next one)."""

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
    late: int = 0
    """Outages started late because the one before had not ended or not been judged."""

    async def run(self, schedule: list[Fault], started: float) -> None:
        """Start each fault at ``started + fault.at_s``; return once every one is over. An
        outage never starts before the previous one is over (a takeover on a loaded
        machine can outlast its reserve): it starts late rather than overlap. Outages planned
        for the same moment (the finale) start together."""
        tasks = []
        previous: asyncio.Task[None] | None = None
        previous_at = 0.0
        for fault in schedule:
            delay = started + fault.at_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            waiting = previous is not None and not previous.done() and previous_at < fault.at_s
            if fault.outage and previous is not None and waiting:
                await asyncio.wait([previous])
                self.late += 1
            if fault.outage and previous_at < fault.at_s and (wait := self._judged_in()) > 0:
                await asyncio.sleep(wait)  # the one before is still being judged
                self.late += 1
            task = asyncio.create_task(self._one(fault))
            tasks.append(task)
            if fault.outage:
                previous, previous_at = task, fault.at_s
        await asyncio.gather(*tasks)

    def _judged_in(self) -> float:
        """Seconds until the last outage's recovery has been judged: its end plus the time
        writes and lag have to come back (``recovery_limit_s``) and the hold lag must keep
        (``HOLD_S``). A host whose reconnects came close together waits a growing
        backoff (SPEC §4), so an outage can end later than its reserve assumed; the next one
        then starts late rather than fall into that recovery's window."""
        ended = [o.ended for o in self.outages if o.ended is not None]
        if not ended:
            return 0.0
        wall = max(ended) + self.world.cfg.recovery_limit_s + HOLD_S
        return wall - time.time()

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
        if fault.kind in ("handover", "sigkill"):
            await self._take_over(fault, outage)
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

    async def _take_over(self, fault: Fault, outage: Outage) -> None:
        """Start a standby; once it says so, SIGTERM (handover) or SIGKILL the active. The
        outage runs from the signal to the standby answering as the active."""
        world = self.world
        old = world.active
        assert old is not None
        new = await world.start_service()
        await new.wait_role("standby", within_s=60.0)
        world.stopping.add(old.name)
        outage.task = old.name
        outage.began = time.time()
        old.proc.send_signal(signal.SIGTERM if fault.kind == "handover" else signal.SIGKILL)
        await new.wait_role("active", within_s=world.cfg.lease_ttl_ms / 1000 + 30.0)
        outage.ended = time.time()
        world.active = new
        code = await old.proc.wait()
        if fault.kind == "handover" and code != 0:
            raise RuntimeError(f"task {old.name} exited with {code} on SIGTERM")

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
