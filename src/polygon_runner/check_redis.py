"""``python -m polygon_runner check-redis``: the brief's ``redis_unit_test``.

Writes ``stock:test`` (TTL 60 s) through the configured store (``REDIS_URL``, and
``REDIS_TOKEN`` for Upstash) and reads it back. Prints one clear line; exit code 0 or 1.
"""

from __future__ import annotations

import time
from typing import Protocol

import msgspec

from polygon_core.errors import PolygonIngestError
from polygon_core.keys import TEST_KEY
from polygon_core.ports import LatestStore, LatestValue
from polygon_core.timestamps import iso_ms

__all__ = ["CHECK_TTL_S", "ReadableStore", "check_store"]

CHECK_TTL_S = 60


class ReadableStore(LatestStore, Protocol):
    """A store that can also read a key back (every real adapter can)."""

    async def read(self, key: str) -> bytes | None: ...


async def check_store(store: ReadableStore, description: str) -> tuple[bool, str]:
    """Write and read back ``stock:test``; returns (ok, message). Never raises store errors."""
    payload = msgspec.json.encode(
        {"check": "polygon-sink", "at": iso_ms(time.time_ns() // 1_000_000)}
    )
    started = time.perf_counter()
    try:
        await store.put_many([LatestValue(TEST_KEY, payload, CHECK_TTL_S)])
        echoed = await store.read(TEST_KEY)
    except PolygonIngestError as exc:
        return False, f"FAILED: {exc}"
    elapsed_ms = (time.perf_counter() - started) * 1000
    if echoed != payload:
        return False, f"FAILED: {description}: wrote {payload!r} but read back {echoed!r}"
    return True, (
        f"OK: wrote and read back {TEST_KEY} (TTL {CHECK_TTL_S} s) on {description} "
        f"in {elapsed_ms:.1f} ms"
    )
