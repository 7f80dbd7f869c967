"""Real-time implementations of the core's ``Clock`` and ``Scheduler`` ports (asyncio)."""

from __future__ import annotations

import asyncio
import time

__all__ = ["AsyncioScheduler", "SystemClock"]


class SystemClock:
    """``Clock`` over the system's wall clock and monotonic clock."""

    __slots__ = ()

    def time_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic_s(self) -> float:
        return time.monotonic()


class AsyncioScheduler:
    """``Scheduler`` over an ``asyncio.Event``; ``poke`` is safe to call from the reader."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def poke(self) -> None:
        self._event.set()

    async def wait_for_poke(self, timeout_s: float | None) -> bool:
        event = self._event
        if not event.is_set():
            if timeout_s is None:
                await event.wait()
            else:
                try:
                    async with asyncio.timeout(timeout_s):
                        await event.wait()
                except TimeoutError:
                    return False
        event.clear()
        return True

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
