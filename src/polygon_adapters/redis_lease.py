"""The leader lease (:class:`~polygon_core.ports.LeaderLease`) on Redis and Redis Cluster,
on the store's own client. The lease key alone is touched by each command, so on a
cluster every call goes to the one node that owns its slot."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError

from polygon_adapters.lease_scripts import RELEASE, RENEW
from polygon_adapters.redis_errors import ErrorKind, classify, describe
from polygon_core.errors import StoreRejected, StoreUnavailable
from polygon_core.keys import LEADER_KEY

__all__ = ["RedisLease"]


class RedisLease:
    """``SET NX PX`` to take, compare-and-set to renew, compare-and-delete to release.
    ``on_node_lost`` (the store's) runs on an answer that says the node is no longer the
    writable primary (``READONLY`` after a failover, a reset): the next request reconnects
    through the configured name, so a renewal does not keep asking the old node until the
    fencing deadline."""

    def __init__(
        self,
        client: Redis | RedisCluster,
        key: str = LEADER_KEY,
        on_node_lost: Callable[[BaseException], Awaitable[None]] | None = None,
    ) -> None:
        self._client = client
        self.key = key
        self._on_node_lost = on_node_lost

    async def acquire(self, owner: str, ttl_ms: int) -> bool:
        reply = await self._call(self._client.set(self.key, owner, nx=True, px=ttl_ms))
        return bool(reply)

    async def renew(self, owner: str, ttl_ms: int) -> bool:
        reply = await self._call(self._client.eval(RENEW, 1, self.key, owner, ttl_ms))
        return bool(reply == 1)

    async def release(self, owner: str) -> bool:
        reply = await self._call(self._client.eval(RELEASE, 1, self.key, owner))
        return bool(reply == 1)

    async def holder(self) -> str | None:
        """The owner id now in the lease key (tests, diagnostics)."""
        value = await self._call(self._client.get(self.key))
        return None if value is None else bytes(value).decode()

    async def _call(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except (RedisError, OSError) as exc:
            kind = classify(exc)
            if kind is ErrorKind.FATAL:
                raise StoreRejected(f"leader lease refused: {describe(exc)}") from exc
            if kind is ErrorKind.NODE_LOST and self._on_node_lost is not None:
                await self._on_node_lost(exc)
            raise StoreUnavailable(f"leader lease: {describe(exc)}") from exc
