"""The leader lease (:class:`~polygon_core.ports.LeaderLease`) on Redis and Redis Cluster,
on the store's own client. The lease key alone is touched by each command, so on a
cluster every call goes to the one node that owns its slot."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError

from polygon_adapters.lease_scripts import RELEASE, RENEW
from polygon_adapters.redis_errors import ErrorKind, classify, describe
from polygon_core.errors import StoreRejected, StoreUnavailable
from polygon_core.keys import LEADER_KEY

__all__ = ["RedisLease"]


class RedisLease:
    """``SET NX PX`` to take, compare-and-set to renew, compare-and-delete to release."""

    def __init__(self, client: Redis | RedisCluster, key: str = LEADER_KEY) -> None:
        self._client = client
        self.key = key

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

    @staticmethod
    async def _call(awaitable: Any) -> Any:
        try:
            return await awaitable
        except (RedisError, OSError) as exc:
            if classify(exc) is ErrorKind.FATAL:
                raise StoreRejected(f"leader lease refused: {describe(exc)}") from exc
            raise StoreUnavailable(f"leader lease: {describe(exc)}") from exc
