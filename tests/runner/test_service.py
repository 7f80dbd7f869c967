"""Service.resolve_symbols: configured ∪ discovered, wildcard skips, failure falls back.
With ``HA_ENABLED``: the archive starts with the first term, and a lost lease says why."""

from __future__ import annotations

import asyncio
import logging

import pytest

from polygon_adapters.memory import InMemoryLatestStore, ManualClock
from polygon_adapters.runtime import AsyncioScheduler, SystemClock
from polygon_adapters.tickers import TickerDiscoveryError
from polygon_core.ingest import Ingest
from polygon_core.subscriptions import SymbolSelection
from polygon_runner.health import HealthReport
from polygon_runner.leadership import Leadership
from polygon_runner.service import Service
from polygon_sim.config import SimulatorConfig
from polygon_sim.server import PolygonSimulator
from tests.helpers import eventually

pytestmark = pytest.mark.integration


def service(
    symbols: SymbolSelection,
    rest_base: str,
    *,
    discover: bool = True,
    limit: int = 0,
    **extra: object,
) -> Service:
    clock = ManualClock()
    ingest = Ingest(InMemoryLatestStore(), clock, AsyncioScheduler())
    return Service(
        ingest=ingest,
        feeds=[],
        report=HealthReport(ingest, [], None, clock),
        symbols=symbols,
        discover=discover,
        rest_base=rest_base,
        api_key="svc-key",
        ticker_limit=limit,
        health_interval_s=30,
        shutdown_timeout_s=5,
        discovery_attempts=2,
        discovery_backoff_s=0.01,
        **extra,
    )


async def test_discovered_tickers_are_added_to_the_configured_ones() -> None:
    config = SimulatorConfig(api_key="svc-key", symbols=("AAPL", "MSFT", "BRK.B"), extra_tickers=5)
    async with PolygonSimulator(config) as sim:
        got = await service(SymbolSelection.of(["ZZZ", "AAPL"]), sim.rest_base).resolve_symbols()
        assert got.symbols[:2] == ("ZZZ", "AAPL")
        assert {"MSFT", "BRK.B"} <= set(got.symbols) and len(got.symbols) == len(set(got.symbols))
        limited = await service(
            SymbolSelection.of(["ZZZ"]), sim.rest_base, limit=2
        ).resolve_symbols()
        assert len(limited.symbols) == 3


async def test_wildcard_and_disabled_discovery_skip_the_rest_call() -> None:
    dead = "http://127.0.0.1:1"
    assert (await service(SymbolSelection.of(["*"]), dead).resolve_symbols()).wildcard
    plain = SymbolSelection.of(["AAPL"])
    assert await service(plain, dead, discover=False).resolve_symbols() == plain


async def test_failure_falls_back_to_the_configured_list(caplog) -> None:
    caplog.set_level(logging.WARNING)
    configured = SymbolSelection.of(["AAPL", "AMpB"])
    svc = service(configured, "http://127.0.0.1:1")
    assert await svc.resolve_symbols() == configured
    assert "ticker discovery failed" in caplog.text and "svc-key" not in caplog.text
    with pytest.raises(TickerDiscoveryError):
        await service(SymbolSelection.of([]), "http://127.0.0.1:1").resolve_symbols()


class ScriptedLease:
    """A ``LeaderLease`` whose answers the test sets."""

    def __init__(self) -> None:
        self.free = False
        self.ours = True

    async def acquire(self, owner: str, ttl_ms: int) -> bool:
        return self.free

    async def renew(self, owner: str, ttl_ms: int) -> bool:
        return self.ours

    async def release(self, owner: str) -> bool:
        return True


class WatchedArchive:
    """An ``ArchiveRunner`` that notes when it runs."""

    def __init__(self) -> None:
        self.ran = asyncio.Event()

    async def run(self) -> None:
        self.ran.set()
        await asyncio.Event().wait()

    async def aclose(self, timeout_s: float | None = None) -> None:
        return None


async def test_with_ha_a_standby_runs_no_archive_until_its_first_term() -> None:
    """The archive's start-up recovery runs in S3 only once the lease is ours: a standby's
    would complete the active task's open uploads (found by the soak)."""
    lease, archive = ScriptedLease(), WatchedArchive()
    leadership = Leadership(lease, SystemClock(), 600, acquire_interval_s=0.01)
    svc = service(
        SymbolSelection.of(["AAPL"]), "", discover=False, archive=archive, leadership=leadership
    )
    running = asyncio.create_task(svc.run())
    try:
        await asyncio.sleep(0.3)
        assert not archive.ran.is_set()
        lease.free = True
        await asyncio.wait_for(archive.ran.wait(), 2)
    finally:
        svc.request_stop()
        assert await asyncio.wait_for(running, 5) == 0


async def test_a_renewal_answered_not_ours_says_expired_or_taken(caplog) -> None:
    """'Not ours' may be a lease that expired with no other task alive (a loop starved past
    the TTL), so the log does not claim another task holds it."""
    caplog.set_level(logging.ERROR)
    lease = ScriptedLease()
    lease.free, lease.ours = True, False
    leadership = Leadership(lease, SystemClock(), 300, acquire_interval_s=0.01)
    reasons: list[str] = []

    async def standby(reason: str) -> None:
        reasons.append(reason)

    leadership.on_standby = standby
    leading = asyncio.create_task(leadership.run())
    try:
        await eventually(lambda: bool(reasons), 2)
    finally:
        leading.cancel()
        await asyncio.gather(leading, return_exceptions=True)
    assert reasons[0] == "the lease is no longer ours: it expired or another task took it"
    assert "expired or another task took it" in caplog.text
