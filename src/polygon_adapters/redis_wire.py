"""The single-server write path's wire work: ``SET key value EX ttl`` packed as RESP bytes
once per batch, and the replies read back without redis-py's per-command machinery."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.exceptions import ResponseError

try:  # the sentinel redis-py's hiredis parser returns when a reply is incomplete
    from redis._parsers.hiredis import NOT_ENOUGH_DATA as _NOT_ENOUGH_DATA
except ImportError:  # pragma: no cover - other redis-py layouts use the portable path
    _NOT_ENOUGH_DATA = None

from polygon_adapters.lease_scripts import event_time_arg, script_time
from polygon_core.ports import LatestValue

__all__ = ["pack_fenced", "pack_sets", "read_replies"]


def pack_sets(values: Sequence[LatestValue]) -> bytes:
    """``SET key value EX ttl`` of each value as one RESP payload.

    One ``%``-format per value for the head (key and value), and the tail (``EX ttl``)
    built once per TTL: a batch holds a handful of distinct TTLs.
    """
    tails: dict[int, bytes] = {}
    parts: list[bytes] = []
    append = parts.append
    for value in values:
        key = value.key.encode()
        body = value.value
        append(b"*5\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$%d\r\n%b" % (len(key), key, len(body), body))
        ttl_s = value.ttl_s
        tail = tails.get(ttl_s)
        if tail is None:
            ttl = b"%d" % ttl_s
            tail = tails[ttl_s] = b"\r\n$2\r\nEX\r\n$%d\r\n%b\r\n" % (len(ttl), ttl)
        append(tail)
    return b"".join(parts)


def _bulk(arg: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(arg), arg)


def pack_fenced(
    values: Sequence[LatestValue], script: bytes, lease_key: bytes, owner: bytes
) -> bytes:
    """``EVAL script`` of :data:`~polygon_adapters.lease_scripts.FENCED_SETS` for a batch:
    KEYS = the lease key and the values' keys; ARGV = the owner id, then value, TTL and
    event time per value. One command, one reply (written count, or -1)."""
    count = len(values)
    parts = [
        b"*%d\r\n$4\r\nEVAL\r\n" % (5 + 4 * count),
        _bulk(script),
        _bulk(b"%d" % (count + 1)),
        _bulk(lease_key),
    ]
    append = parts.append
    for value in values:
        append(_bulk(value.key.encode()))
    append(_bulk(owner))
    for value in values:
        append(_bulk(value.value))
        append(_bulk(b"%d" % value.ttl_s))
        append(_bulk(event_time_arg(script_time(value))))
    return b"".join(parts)


async def read_replies(conn: Any, count: int) -> list[ResponseError]:
    """Read ``count`` replies; returns the error replies among them.

    With the hiredis parser the replies are taken straight from its reader, feeding it from
    the socket as needed: one C call per reply instead of a stack of coroutines per reply
    (about 40 times less client CPU per command). This relies on redis-py's hiredis parser
    internals (``_reader`` and ``read_from_socket``, stable since redis-py 4.2); with any
    other parser the portable ``read_response`` loop is used. An error reply redis-py maps
    to a connection error (``LOADING``, ``NOAUTH``) is raised, the other replies unread.
    Each read from the socket waits at most the connection's ``socket_timeout``, as
    ``read_response`` does (``TimeoutError``): a stalled Redis (paused, or a flow dropped
    without a reset) fails the batch instead of holding the flush forever.
    """
    parser = getattr(conn, "_parser", None)
    reader = getattr(parser, "_reader", None)
    if _NOT_ENOUGH_DATA is None or reader is None or not hasattr(parser, "read_from_socket"):
        return await _read_replies_portable(conn, count)
    assert parser is not None
    errors: list[ResponseError] = []
    gets = reader.gets
    refill = parser.read_from_socket
    timeout_s = getattr(conn, "socket_timeout", None)
    remaining = count
    while remaining:
        reply = gets(False)
        if reply is _NOT_ENOUGH_DATA:
            async with asyncio.timeout(timeout_s):
                await refill()
            continue
        remaining -= 1
        if isinstance(reply, ResponseError):
            errors.append(reply)
        elif isinstance(reply, Exception):  # a protocol or connection error
            raise reply
    return errors


async def _read_replies_portable(conn: Any, count: int) -> list[ResponseError]:
    errors: list[ResponseError] = []
    read = conn.read_response
    for _ in range(count):
        try:
            await read(disable_decoding=True)
        except ResponseError as exc:  # one command failed; keep reading the rest
            errors.append(exc)
    return errors
