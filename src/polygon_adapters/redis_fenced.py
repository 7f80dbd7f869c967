"""The fenced, latest-wins batch write on Redis (``HA_ENABLED``; see
:mod:`polygon_adapters.lease_scripts`): one packed ``EVAL`` on a single server, one
latest-wins script per key on a cluster (the lease's slot is not the batch's)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError, ResponseError

from polygon_adapters.lease_scripts import (
    FENCED_SETS,
    LATEST_WINS_SET,
    Fence,
    event_time_arg,
    script_time,
)
from polygon_adapters.redis_errors import ErrorKind, classify
from polygon_adapters.redis_wire import pack_fenced
from polygon_core.errors import LeaseLost
from polygon_core.ports import LatestValue

__all__ = ["put_fenced"]

_FENCED = FENCED_SETS.encode()


async def put_fenced(
    client: Redis | RedisCluster,
    fence: Fence,
    values: Sequence[LatestValue],
    stats: Any,
    description: str,
) -> list[Any]:
    """Write ``values`` under ``fence``; returns the error replies (empty: done). Raises
    :class:`~polygon_core.errors.LeaseLost` when the lease is another task's (nothing
    written); counts values not written because the stored record was newer in
    ``stats.older_refused``."""
    if isinstance(client, RedisCluster):
        pipe = client.pipeline(transaction=False)
        for v in values:
            t = event_time_arg(script_time(v))
            pipe.eval(LATEST_WINS_SET, 1, v.key, v.value, v.ttl_s, t)
        results = await pipe.execute(raise_on_error=False)
        stats.older_refused += sum(1 for r in results if r == 0)
        return [r for r in results if isinstance(r, BaseException)]
    payload = pack_fenced(values, _FENCED, fence.key.encode(), fence.owner.encode())
    pool = client.connection_pool
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await conn.send_packed_command(payload, check_health=True)
        try:
            written = await conn.read_response(disable_decoding=True)
        except RedisError as exc:
            if isinstance(exc, ResponseError) and classify(exc) is ErrorKind.RETRY:
                return [exc]  # an error reply: the connection itself is fine
            raise
    except BaseException:
        await conn.disconnect()
        raise
    finally:
        await pool.release(conn)
    if written == -1:
        raise LeaseLost(f"{description}: the lease is held by another task")
    stats.older_refused += len(values) - int(written)
    return []
