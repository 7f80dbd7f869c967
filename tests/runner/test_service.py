"""Service.resolve_symbols: configured ∪ discovered, wildcard skips, failure falls back."""

from __future__ import annotations

import logging

import pytest

from polygon_adapters.memory import InMemoryLatestStore, ManualClock
from polygon_adapters.runtime import AsyncioScheduler
from polygon_adapters.tickers import TickerDiscoveryError
from polygon_core.ingest import Ingest
from polygon_core.subscriptions import SymbolSelection
from polygon_runner.health import HealthReport
from polygon_runner.service import Service
from polygon_sim.config import SimulatorConfig
from polygon_sim.server import PolygonSimulator

pytestmark = pytest.mark.integration


def service(symbols: SymbolSelection, rest_base: str, *, discover: bool = True, limit: int = 0):
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
