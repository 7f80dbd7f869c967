"""The running service: two feeds, the ingest, the optional archive, health, and stop.

:meth:`Service.run` resolves the symbols (configured ∪ discovered), starts the feeds, the
flush loop, the archive's background work and the health log, and waits for a stop
request (SIGTERM/SIGINT) or a fatal error (exit 1; exit 2 when S3 says the archive is
misconfigured: no such bucket, access denied, bad credentials). The orderly stop, bounded by
``SHUTDOWN_TIMEOUT_SEC``: stop reading both sockets, write what the conflation buffer
holds, complete the archive's uploads, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable
from typing import Any, Protocol

from polygon_adapters.polygon_ws import PolygonWebSocketFeed
from polygon_adapters.tickers import TickerDiscoveryError, discover_tickers
from polygon_core.errors import ArchiveMisconfigured, PolygonIngestError
from polygon_core.ingest import Ingest
from polygon_core.subscriptions import SymbolSelection
from polygon_runner.health import HealthReport
from polygon_runner.leadership import Leadership

GC_INTERVAL_S = 15.0

__all__ = ["ArchiveRunner", "Service"]

logger = logging.getLogger(__name__)


class ArchiveRunner(Protocol):
    """The archive as the service drives it: background work plus an orderly close."""

    async def run(self) -> None: ...

    async def aclose(self, timeout_s: float | None = None) -> None: ...


class Service:
    """Everything that runs; built by the container, run by ``__main__``."""

    def __init__(
        self,
        *,
        ingest: Ingest,
        feeds: list[PolygonWebSocketFeed],
        report: HealthReport,
        symbols: SymbolSelection,
        discover: bool,
        rest_base: str,
        api_key: str,
        ticker_limit: int,
        health_interval_s: float,
        shutdown_timeout_s: float,
        archive: ArchiveRunner | None = None,
        discovery_attempts: int = 5,
        discovery_backoff_s: float = 0.5,
        leadership: Leadership | None = None,
    ) -> None:
        self.ingest = ingest
        self.feeds = feeds
        ingest.reader_behind = self._reader_behind
        self.archive = archive
        self._symbols = symbols
        self._discover = discover
        self._rest_base = rest_base
        self._api_key = api_key
        self._ticker_limit = ticker_limit
        self._health_interval_s = health_interval_s
        self._shutdown_timeout_s = shutdown_timeout_s
        self._discovery_retry = (discovery_attempts, discovery_backoff_s)
        self._stop = asyncio.Event()
        self.report = report
        self.started_monotonic = time.monotonic()
        self.leadership = leadership
        self._feed_tasks: list[asyncio.Task[None]] = []
        self._first_term = asyncio.Event()
        if leadership is not None:
            for feed in feeds:
                feed.gate = leadership.holds
            leadership.on_active = self._open_feeds
            leadership.on_standby = self._close_feeds
            leadership.has_claim = self._holds_values

    def _holds_values(self) -> bool:
        """Whether this standby holds values of its last term (first claim on the lease)."""
        return self.ingest.held and len(self.ingest.buffer) > 0

    def _reader_behind(self) -> bool:
        """Whether either feed has input waiting to be read (the flush loop's question)."""
        return any(feed.input_waiting() for feed in self.feeds)

    def request_stop(self) -> None:
        """Begin the orderly stop (safe to call from a signal handler)."""
        self._stop.set()

    async def resolve_symbols(self) -> SymbolSelection:
        """Configured ∪ discovered; wildcard skips discovery; discovery failure falls back."""
        symbols = self._symbols
        if symbols.wildcard or not self._discover:
            return symbols
        try:
            attempts, backoff_s = self._discovery_retry
            found = await discover_tickers(
                self._rest_base,
                self._api_key,
                limit=self._ticker_limit,
                attempts=attempts,
                backoff_s=backoff_s,
            )
        except TickerDiscoveryError as exc:
            if not symbols:
                raise
            logger.warning(
                "ticker discovery failed (%s); using the %d configured symbols",
                exc,
                len(symbols.symbols),
            )
            return symbols
        merged = symbols.with_symbols(found)
        logger.info(
            "ticker discovery: %d tickers found; subscribing %d symbols",
            len(found),
            len(merged.symbols),
        )
        return merged

    async def run(self) -> int:
        """Run until stopped; returns the process exit code."""
        symbols = await self.resolve_symbols()
        for feed in self.feeds:
            feed.symbols = symbols
        tasks: dict[asyncio.Task[Any], str] = {}

        def start(name: str, coro: Awaitable[Any]) -> None:
            tasks[asyncio.ensure_future(coro)] = name

        if self.leadership is None:
            for feed in self.feeds:
                start(f"feed-{feed.role.value}", feed.run(self.ingest.on_frame))
        else:  # the feeds open when the lease is ours (see polygon_runner.leadership)
            logger.info("HA: standby until the leader lease is ours")
            start("leader", self._lead(self.leadership))
        start("flush", self.ingest.run_flush_loop())
        start("health-log", self._health_log())
        start("gc", self._collect_cycles())
        if self.archive is not None:
            start("archive", self._archive(self.archive))
        stopper = asyncio.ensure_future(self._stop.wait())
        code = 0
        try:
            done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is stopper or task.cancelled():
                    continue
                exc = task.exception()
                if isinstance(exc, ArchiveMisconfigured):  # a configuration error: one line
                    logger.critical("cannot start: the S3 archive is misconfigured: %s", exc)
                    code = 2
                elif exc is not None:
                    # An error of ours (the store refused the credentials ...) says all in
                    # one line; anything else comes with its traceback.
                    trace = None if isinstance(exc, PolygonIngestError) else exc
                    logger.critical("%s failed: %s", tasks[task], exc, exc_info=trace)
                    code = 1
                elif not self._stop.is_set():
                    logger.critical("%s ended unexpectedly", tasks[task])
                    code = 1
        finally:
            stopper.cancel()
            left = await self._shutdown(tasks)
        return code or (1 if left else 0)

    async def _lead(self, leadership: Leadership) -> None:
        """The lease loop, ending with the first feed that fails (as a feed task would)."""
        lease = asyncio.ensure_future(leadership.run())
        try:
            while True:
                watched = {lease, *self._feed_tasks}
                done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task is lease or (not task.cancelled() and task.exception() is not None):
                        task.result()
                        return
                self._feed_tasks = [t for t in self._feed_tasks if not t.done()]
                if not self._feed_tasks and done and leadership.holds():
                    return  # a feed ended by itself: "ended unexpectedly"
        finally:
            lease.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lease

    async def _archive(self, archive: ArchiveRunner) -> None:
        """The archive; with ``HA_ENABLED`` from the first term on: a standby touches
        nothing in S3 (its start-up recovery would complete the active task's uploads)."""
        if self.leadership is not None:
            await self._first_term.wait()
        await archive.run()

    async def _open_feeds(self) -> None:
        """Active: write what the last term left pending (less what outlived its TTL)
        and start both feeds (the store's fence already lets writes through)."""
        self._first_term.set()
        if self.ingest.held:
            expired = self.ingest.resume()
            logger.warning(
                "active: writing %d values held from the last term; %d past their TTL dropped",
                len(self.ingest.buffer),
                expired,
            )
        for feed in self.feeds:
            feed.reopen()
        self._feed_tasks = [
            asyncio.ensure_future(feed.run(self.ingest.on_frame)) for feed in self.feeds
        ]

    async def _close_feeds(self, reason: str) -> None:
        """Fenced: drop both connections at once, hold what waits to be written for the
        next term (written then through the latest-wins script: no rollback), and wait
        for the feed tasks to end."""
        self.ingest.hold()
        for feed in self.feeds:
            feed.abort()
        tasks, self._feed_tasks = self._feed_tasks, []
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        logger.warning(
            "standby: feeds closed (%s); %d pending values held for the next term",
            reason,
            len(self.ingest.buffer),
        )

    async def _shutdown(self, tasks: dict[asyncio.Task[Any], str]) -> int:
        """Stop reading, flush the store, close the archive; returns values left unwritten."""
        started = time.monotonic()
        deadline = started + self._shutdown_timeout_s
        logger.info("stopping: closing feeds, flushing the store, closing the archive")
        for task, name in tasks.items():
            if name == "leader":  # no new term, no renewal: the lease is released below
                task.cancel()
        for feed in self.feeds:
            await feed.aclose()
        if self._feed_tasks:
            await asyncio.wait(self._feed_tasks, timeout=2.0)
        self.ingest.stop()
        left = 0
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.1) * 0.4):
                await self._wait_named(tasks, "flush")
                if self._failed(tasks, "flush"):  # refused: another attempt is refused too
                    left = len(self.ingest.buffer)
                    logger.error("stopping: %d latest values not written", left)
                else:
                    left = await self.ingest.final_flush()
        except TimeoutError:
            left = len(self.ingest.buffer)
            logger.error("stopping: store flush timed out; %d values not written", left)
        except PolygonIngestError as exc:
            left = len(self.ingest.buffer)
            logger.error("stopping: final flush failed: %s", exc)
        if self.leadership is not None:  # hand over: the standby takes the lease at once
            await self.leadership.release()
        if self.archive is not None:
            try:
                left_s = max(deadline - time.monotonic(), 0.1)
                async with asyncio.timeout(left_s):  # a backstop: aclose keeps to its share
                    await self.archive.aclose(timeout_s=left_s * 0.9)
            except TimeoutError:
                logger.error("stopping: the archive did not finish before the deadline")
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*tasks, return_exceptions=True)
        logger.info(
            "stopped in %.1f s; %s",
            time.monotonic() - started,
            self.report.summary_line(),
        )
        return left

    @staticmethod
    def _failed(tasks: dict[asyncio.Task[Any], str], name: str) -> bool:
        return any(
            n == name and t.done() and not t.cancelled() and t.exception() is not None
            for t, n in tasks.items()
        )

    @staticmethod
    async def _wait_named(tasks: dict[asyncio.Task[Any], str], name: str) -> None:
        for task, task_name in tasks.items():
            if task_name == name and not task.done():
                with contextlib.suppress(asyncio.CancelledError, PolygonIngestError):
                    await task

    @staticmethod
    async def _collect_cycles() -> None:
        """A full garbage collection every ``GC_INTERVAL_S``.

        The runner raises the collector's thresholds for the hot path and freezes what
        start-up made (``__main__``), so the oldest generation would be scanned only after
        hours; meanwhile reference cycles that aiohttp and botocore leave behind (a failed
        request's exception, traceback and frames) keep their request bodies, S3 parts of
        16 MiB, alive. Collecting every 15 s returns them; it scans only what was made since
        start-up (about 2 ms for the state of 10,000 symbols).
        """
        while True:
            await asyncio.sleep(GC_INTERVAL_S)
            started = time.perf_counter()
            found = gc.collect()
            if logger.isEnabledFor(logging.DEBUG):
                elapsed_ms = (time.perf_counter() - started) * 1000
                logger.debug("gc: %d unreachable objects collected in %.1f ms", found, elapsed_ms)

    async def _health_log(self) -> None:
        while True:
            await asyncio.sleep(self._health_interval_s)
            logger.info("health", extra={"health": self.report.snapshot(delta=True)})
