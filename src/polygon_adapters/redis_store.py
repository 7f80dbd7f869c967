"""``LatestStore`` over Redis with redis-py's asyncio client (hiredis parser when installed).

URLs (``REDIS_URL``):

* ``redis://[[user]:password@]host[:port][/db]``: one Redis server;
* ``rediss://...``: the same over TLS (certificates verified; ``?ssl_cert_reqs=none`` and
  the other redis-py URL options work as documented by redis-py);
* ``redis+cluster://[[user]:password@]host[:port]`` (or ``rediss+cluster://`` for TLS):
  a Redis Cluster reached through any one node; the client discovers the others.

A batch is written as one non-transactional pipeline of ``SET key value EX ttl``. On a single
server the commands are packed into RESP bytes once and sent on one pooled connection, and
the replies are read back in order (redis-py's pipeline object costs about 40 times more
client CPU per command). On a cluster, redis-py's cluster pipeline routes each command to its
slot's node.

Timeouts and retries are explicit: connect 2 s, read/write 5 s, and two quick retries with
exponential backoff inside redis-py for its own commands (``from_url`` has no retries by
default); the flush loop adds its own backoff on top. Connection errors, timeouts and error
replies become :class:`~polygon_core.errors.StoreUnavailable`; authentication and permission
errors become :class:`~polygon_core.errors.StoreRejected`.

Failover: when the node stops being the writable primary (``READONLY``, ``MASTERDOWN``,
``LOADING``, ``CLUSTERDOWN``, ``TRYAGAIN``, a reset or timeout; see
:mod:`polygon_adapters.redis_errors`) every pooled connection is dropped, so the next
attempt resolves the URL's host name again (a managed primary endpoint moves on failover);
on a cluster the slot map is reloaded. One WARNING marks leaving the node, one the first
write accepted again (with the new node's address); ``stats`` counts the resets by reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from polygon_adapters.lease_scripts import Fence
from polygon_adapters.redis_errors import ErrorKind, classify, describe, worst
from polygon_adapters.redis_fenced import put_fenced
from polygon_adapters.redis_lease import RedisLease
from polygon_adapters.redis_wire import pack_sets, read_replies
from polygon_core.errors import LeaseLost, StoreRejected, StoreUnavailable
from polygon_core.ports import LatestValue

__all__ = [
    "CLUSTER_SCHEMES",
    "REDIS_SCHEMES",
    "RedisLatestStore",
    "RedisStoreStats",
    "redact_url",
]

logger = logging.getLogger(__name__)

REDIS_SCHEMES = ("redis", "rediss")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe to log)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo = f"{parts.username or ''}:***"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{userinfo}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class RedisStoreStats:
    """How often the store left a node (read by the metrics; never reset)."""

    __slots__ = ("node_resets", "older_refused", "resets_by_reason")

    def __init__(self) -> None:
        self.older_refused = 0
        """Fenced writes not done because the stored record was newer (``HA_ENABLED``)."""
        self.node_resets = 0
        """Times the pooled connections were dropped because the node was lost."""
        self.resets_by_reason: Counter[str] = Counter()
        """``READONLY``, ``MASTERDOWN``, ``LOADING``, ``CLUSTERDOWN``, ``connection`` ..."""


class RedisLatestStore:
    """Latest values in Redis (single server, TLS or Cluster)."""

    def __init__(self, client: Redis | RedisCluster, *, description: str = "redis") -> None:
        self._client = client
        self.description = description
        """The URL with its password redacted, for logs."""
        self.stats = RedisStoreStats()
        self._left_at: float | None = None
        self._peer: str | None = None
        self._has_written = False
        self.fence: Fence | None = None
        """Set while ``HA_ENABLED``: every batch is then one fenced, latest-wins script."""

    def lease(self) -> RedisLease:
        """The leader lease on this store's client."""
        return RedisLease(self._client, on_node_lost=self._leave_node)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        connect_timeout_s: float = 2.0,
        timeout_s: float = 5.0,
        max_connections: int = 16,
    ) -> RedisLatestStore:
        """Build a store for ``url`` (see the module docstring for the accepted forms)."""
        scheme = urlsplit(url).scheme.lower()
        retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2)
        options: dict[str, Any] = {
            "socket_connect_timeout": connect_timeout_s,
            "socket_timeout": timeout_s,
            "socket_keepalive": True,
            "retry": retry,
            "health_check_interval": 30,
            "client_name": f"polygon-sink-{os.getpid()}",  # CLIENT LIST: which task
        }
        if scheme in CLUSTER_SCHEMES:
            plain = scheme.split("+", 1)[0] + url[len(scheme) :]
            client: Redis | RedisCluster = RedisCluster.from_url(
                plain, max_connections=max_connections, **options
            )
        elif scheme in REDIS_SCHEMES:
            client = Redis.from_url(url, max_connections=max_connections, **options)
        else:
            raise ValueError(f"not a Redis URL scheme: {scheme!r}")
        return cls(client, description=redact_url(url))

    @property
    def is_cluster(self) -> bool:
        return isinstance(self._client, RedisCluster)

    async def put_many(self, values: Sequence[LatestValue]) -> None:
        if not values:
            return
        fence = self.fence
        if fence is not None and not fence.holds():
            raise LeaseLost(f"{self.description}: not the leader; nothing written")
        try:
            if fence is not None:
                try:
                    async with asyncio.timeout(max(fence.remaining_s(), 0.001)):
                        errors = await put_fenced(
                            self._client, fence, values, self.stats, self.description
                        )
                except TimeoutError:
                    raise LeaseLost(
                        f"{self.description}: the fencing deadline came with a write in flight"
                    ) from None
            elif isinstance(self._client, RedisCluster):
                errors = await self._put_cluster(self._client, values)
            else:
                errors = await self._put_packed(self._client, values)
        except (RedisError, OSError) as exc:
            raise await self._translate(exc) from exc
        if errors:
            raise await self._reply_errors(errors, len(values))
        self._has_written = True
        if self._left_at is not None:
            self._writing_again()

    async def _put_packed(self, client: Redis, values: Sequence[LatestValue]) -> list[Any]:
        payload = pack_sets(values)
        pool = client.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.send_packed_command(payload, check_health=True)
            errors: list[Any] = await read_replies(conn, len(values))
            if self._left_at is not None and not errors:
                self._peer = _peer_of(conn)
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            await pool.release(conn)
        return errors

    async def _put_cluster(self, client: RedisCluster, values: Sequence[LatestValue]) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for v in values:
            pipe.set(v.key, v.value, ex=v.ttl_s)
        results = await pipe.execute(raise_on_error=False)
        return [r for r in results if isinstance(r, BaseException)]

    async def _translate(self, exc: BaseException) -> Exception:
        """The store error for a raised Redis error (leaving the node when it is lost)."""
        kind = classify(exc)
        if kind is ErrorKind.FATAL:
            return StoreRejected(f"{self.description} refused the credentials: {describe(exc)}")
        if kind is ErrorKind.NODE_LOST:
            await self._leave_node(exc)
        return StoreUnavailable(f"{self.description}: {describe(exc)}")

    async def _reply_errors(self, errors: list[Any], total: int) -> Exception:
        """The store error for a batch's error replies (the gravest kind decides)."""
        kind = worst(errors)
        first = next(e for e in errors if classify(e) is kind)
        if kind is ErrorKind.FATAL:
            return StoreRejected(f"{self.description} refused the writes: {describe(first)}")
        if kind is ErrorKind.NODE_LOST:
            await self._leave_node(first)
        return StoreUnavailable(
            f"{self.description}: {len(errors)} of {total} SET commands failed: {describe(first)}"
        )

    async def _leave_node(self, exc: BaseException) -> None:
        """Drop every pooled connection (or reload a cluster's slot map), so that the next
        attempt resolves the configured name again and finds the node now behind it."""
        reason = _reason(exc)
        self.stats.node_resets += 1
        self.stats.resets_by_reason[reason] += 1
        if self._left_at is None and self._has_written:  # (no node to leave before that)
            self._left_at = time.monotonic()
            logger.warning(
                "redis %s: left the node (%s); reconnecting through the configured address",
                self.description,
                describe(exc),
                extra={"event": "redis_node_left", "reason": reason},
            )
        with contextlib.suppress(RedisError, OSError):
            if isinstance(self._client, RedisCluster):
                await self._client.nodes_manager.initialize()
            else:
                await self._client.connection_pool.disconnect()

    def _writing_again(self) -> None:
        left_at, self._left_at = self._left_at, None
        assert left_at is not None
        peer, self._peer = self._peer, None
        logger.warning(
            "redis %s: writes accepted again%s, %.1f s after leaving the node",
            self.description,
            f" by {peer}" if peer else "",
            time.monotonic() - left_at,
            extra={"event": "redis_node_found", "peer": peer or ""},
        )

    async def read(self, key: str) -> bytes | None:
        """Read one key (for the Redis check)."""
        try:
            value = await self._client.get(key)
        except (RedisError, OSError) as exc:
            raise await self._translate(exc) from exc
        if value is None or isinstance(value, bytes):
            return value
        return str(value).encode()

    async def aclose(self) -> None:
        await self._client.aclose()


def _reason(exc: BaseException) -> str:
    """A short label for the node-reset counter: the reply's code, or ``connection``."""
    code = describe(exc).split(" ", 1)[0]
    return code if code.isupper() else "connection"


def _peer_of(conn: Any) -> str | None:
    """``host:port`` of the server at the other end of a redis-py connection, if known."""
    writer = getattr(conn, "_writer", None)
    peer = writer.get_extra_info("peername") if writer is not None else None
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else None
