"""Ports: what the core needs from the outside world, as narrow typing Protocols.

Adapters implement these structurally (no inheritance). Ports speak domain types only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import msgspec

from polygon_core.codec import DecodedFrame
from polygon_core.events import Channel

__all__ = [
    "Clock",
    "FeedSource",
    "FrameHandler",
    "LeaderLease",
    "LatestStore",
    "LatestValue",
    "RawArchive",
    "Scheduler",
]


class LatestValue(msgspec.Struct, frozen=True):
    """One latest-value write: ``SET key value EX ttl_s``.

    ``event_time`` is the record's event time (``start`` for agg1m, ``ts`` otherwise): a
    fenced store (``HA_ENABLED``) writes the value only if the stored record's is not newer;
    with ``strictly_newer``, only if it is older (a value held across a standby period: a
    record of the same time was written since by the task that led meanwhile, and is the
    later one, e.g. the same minute's bar built from more trades).
    """

    key: str
    value: bytes
    ttl_s: int
    event_time: int | float = 0
    strictly_newer: bool = False


class LeaderLease(Protocol):
    """The leader lease in the store (SPEC §7): ``SET key owner NX PX ttl``, renewed by
    compare-and-set, released by compare-and-delete.

    Each call returns whether ``owner`` holds the lease afterwards (``release``: whether it
    was ours and is now gone), or raises
    :class:`~polygon_core.errors.StoreUnavailable` (unknown: the policy decides).
    """

    async def acquire(self, owner: str, ttl_ms: int) -> bool: ...

    async def renew(self, owner: str, ttl_ms: int) -> bool: ...

    async def release(self, owner: str) -> bool: ...


class LatestStore(Protocol):
    """Writes latest values (Redis, Redis Cluster, Upstash, memory).

    ``put_many`` writes the whole batch or raises
    :class:`~polygon_core.errors.StoreUnavailable` (retry later) or
    :class:`~polygon_core.errors.StoreRejected` (fatal). Order within a batch is free:
    a batch never holds one key twice.
    """

    async def put_many(self, values: Sequence[LatestValue]) -> None: ...

    async def aclose(self) -> None: ...


class RawArchive(Protocol):
    """Keeps raw NDJSON lines per channel (S3 multipart, memory).

    ``append`` is synchronous and cheap: it buffers; uploads run in the background.
    ``lines`` is one or more complete NDJSON lines of one channel, in arrival order, each
    ending in ``\\n``; ``count`` says how many (the ingest hands over a frame's lines of a
    channel at once).
    """

    def append(self, channel: Channel, lines: bytes, ingest_ms: int, count: int = 1) -> None: ...

    async def aclose(self) -> None: ...


class Clock(Protocol):
    """Wall-clock and monotonic time; the core never reads the clock itself."""

    def time_ms(self) -> int:
        """Epoch milliseconds, UTC."""
        ...

    def monotonic_s(self) -> float:
        """Seconds from an arbitrary origin that never goes backwards."""
        ...


class Scheduler(Protocol):
    """Waiting, for use cases that must not import an event loop.

    ``poke`` is synchronous and cheap (called from the socket reader); a pending poke makes
    the next ``wait_for_poke`` return at once.
    """

    def poke(self) -> None: ...

    async def wait_for_poke(self, timeout_s: float | None) -> bool:
        """Return True when poked (clearing the poke), False after ``timeout_s``."""
        ...

    async def sleep(self, seconds: float) -> None: ...


FrameHandler = Callable[[DecodedFrame, int], None]
"""Called by a feed with each decoded frame and its receive time (epoch ms).

It runs on the socket reader and must not block or await."""


class FeedSource(Protocol):
    """One market-data connection (kept alive, reconnected) that pushes frames."""

    async def run(self, on_frame: FrameHandler) -> None:
        """Connect and pump frames to ``on_frame`` until :meth:`aclose` or a fatal error."""
        ...

    async def aclose(self) -> None: ...
