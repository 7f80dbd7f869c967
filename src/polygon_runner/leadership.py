"""The service's role under ``HA_ENABLED`` (SPEC §7): standby or active, by the leader lease.

:class:`Leadership` drives :class:`~polygon_core.lease.LeasePolicy` with the store's lease
(:class:`~polygon_core.ports.LeaderLease`): a standby tries ``SET NX PX`` every 250 ms; on
taking the lease it starts both feeds (``on_active``); after an outage of the store, a
standby holding nothing lets the former leader, which may hold values it could not write,
claim first (see :mod:`polygon_core.lease`); an active task renews every third of the TTL,
each renewal bounded by its fencing deadline. When a renewal finds another owner, or none
succeeds by the deadline, it closes both feeds at once (``on_standby``) and is a standby
again; its writes stopped at the deadline already (the store's fence asks :meth:`holds`
before every batch, and the store's script checks the owner id).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable

from polygon_core.errors import PolygonIngestError, StoreRejected
from polygon_core.lease import LeaseAction, LeasePolicy, Role
from polygon_core.ports import Clock, LeaderLease

__all__ = ["Leadership", "new_owner_id"]

logger = logging.getLogger(__name__)


def new_owner_id() -> str:
    """A random owner id that also says which task holds the lease (host, pid)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(8)}"


class Leadership:
    """Takes, keeps and gives up the lease; calls back on each change of role."""

    def __init__(
        self,
        lease: LeaderLease,
        clock: Clock,
        ttl_ms: int,
        *,
        owner: str | None = None,
        acquire_interval_s: float = 0.25,
    ) -> None:
        self.lease = lease
        self.owner = owner or new_owner_id()
        self.ttl_ms = ttl_ms
        self.policy = LeasePolicy(ttl_ms / 1000.0, acquire_interval_s=acquire_interval_s)
        self._clock = clock
        self.started_s = clock.monotonic_s()
        self.on_active: Callable[[], Awaitable[None]] = _nothing
        self.on_standby: Callable[[str], Awaitable[None]] = _no_reason
        self.has_claim: Callable[[], bool] = _no_claim
        """Whether this task holds values of its last term (the first claim after an
        outage of the store; see :mod:`polygon_core.lease`)."""
        self.terms = 0
        """Times this task became active."""
        self.fenced = 0
        """Times it fenced itself (lost the lease or could not renew in time)."""
        self.last_answer_s: float | None = None
        """When the store last answered a lease request (monotonic), for health."""

    @property
    def role(self) -> Role:
        return Role.ACTIVE if self.holds() else Role.STANDBY

    def holds(self) -> bool:
        """Whether this task may hold feed connections and write now (the store's fence)."""
        return self.policy.is_active(self._clock.monotonic_s())

    def remaining_s(self) -> float:
        """Seconds to the fencing deadline (0 when not active)."""
        deadline = self.policy.fence_deadline()
        if deadline is None or not self.holds():
            return 0.0
        return deadline - self._clock.monotonic_s()

    async def run(self) -> None:
        """Until cancelled: acquire, renew, fence. Raises only :class:`StoreRejected`."""
        policy = self.policy
        clock = self._clock
        while True:
            now = clock.monotonic_s()
            policy.eager = self.has_claim()
            action, wait = policy.next_action(now)
            if action is LeaseAction.WAIT:
                await asyncio.sleep(wait)
            elif action is LeaseAction.PROBE:  # after an outage: is the store back?
                if await self._ask(self.lease.release(self.owner), now) is not None:
                    policy.probed(clock.monotonic_s())
            elif action is LeaseAction.FENCE:
                policy.lost(now)
                await self._demoted("could not renew the lease before its fencing deadline")
            elif action is LeaseAction.ACQUIRE:
                ok = await self._ask(self.lease.acquire(self.owner, self.ttl_ms), now)
                if ok is None:
                    continue
                if not ok:
                    policy.not_acquired(clock.monotonic_s())
                    continue
                policy.acquired(now, clock.monotonic_s())
                if policy.role is Role.ACTIVE:
                    self.terms += 1
                    logger.warning(
                        "leader lease taken (owner %s, TTL %d ms): active, opening the feeds",
                        self.owner,
                        self.ttl_ms,
                        extra={"event": "lease_acquired"},
                    )
                    await self.on_active()
            else:
                ok = await self._ask(self.lease.renew(self.owner, self.ttl_ms), now)
                if ok is None:
                    continue
                if ok:
                    policy.renewed(now, clock.monotonic_s())
                    if policy.role is Role.ACTIVE:
                        continue
                    reason = "the lease renewal was answered after the fencing deadline"
                else:
                    policy.lost(clock.monotonic_s())
                    reason = "the lease is no longer ours: it expired or another task took it"
                await self._demoted(reason)

    async def _ask(self, request: Awaitable[bool], sent: float) -> bool | None:
        """The request's answer, or None when it failed or ran out of time (noted)."""
        try:
            async with asyncio.timeout(max(self.policy.request_timeout_s(sent), 0.01)):
                answer = await request
        except StoreRejected:
            raise
        except (PolygonIngestError, TimeoutError) as exc:
            self.policy.attempt_failed(self._clock.monotonic_s())
            if self.policy.role is Role.ACTIVE:
                logger.warning("leader lease renewal failed (%s); retrying", str(exc) or "timeout")
            return None
        self.last_answer_s = self._clock.monotonic_s()
        return answer

    async def _demoted(self, reason: str) -> None:
        self.fenced += 1
        logger.error(
            "leader lease lost (%s): closing the feeds, writes stopped; standby",
            reason,
            extra={"event": "lease_lost"},
        )
        await self.on_standby(reason)

    async def release(self) -> bool:
        """Give the lease up if this task holds it (the orderly stop); True if released."""
        if self.policy.role is not Role.ACTIVE:
            return False
        self.policy.lost(self._clock.monotonic_s())
        try:
            async with asyncio.timeout(2.0):
                released = await self.lease.release(self.owner)
        except (PolygonIngestError, TimeoutError) as exc:
            logger.warning("leader lease not released (%s); it expires by itself", exc)
            return False
        if released:
            logger.info("leader lease released", extra={"event": "lease_released"})
        return released


async def _nothing() -> None:
    return None


async def _no_reason(reason: str) -> None:
    return None


def _no_claim() -> bool:
    return False
