"""Integration tests of ticker discovery against the simulator's tickers REST endpoint.

``discover_tickers`` runs for real over loopback HTTP; the simulator counts the requests,
where the key came from, and injects 429/500 answers and the repeated-cursor bug. Every
test also checks that the API key never reached a log record.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from polygon_adapters.tickers import TickerDiscoveryError, discover_tickers
from polygon_sim.server import PolygonSimulator, SimulatorConfig
from polygon_sim.tickers import DEFAULT_SYMBOLS, reference_tickers

pytestmark = pytest.mark.integration

KEY = "pk-rest-Vw3discoveryKEY-91af"


@pytest.fixture(autouse=True)
def no_key_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    for record in caplog.records:
        assert KEY not in record.getMessage()
        assert KEY not in repr(vars(record))
    assert KEY not in caplog.text


@asynccontextmanager
async def simulator(**options: Any) -> AsyncIterator[PolygonSimulator]:
    options.setdefault("api_key", KEY)
    async with PolygonSimulator(SimulatorConfig(**options)) as sim:
        yield sim


def active(extra: int) -> list[str]:
    """What the endpoint lists as active, in its order (sorted by ticker)."""
    return [t.ticker for t in reference_tickers(DEFAULT_SYMBOLS, extra) if t.active]


async def test_follows_next_url_across_pages_with_the_key_on_every_page() -> None:
    async with simulator(extra_tickers=2300) as sim:
        tickers = await discover_tickers(sim.rest_base, KEY)
        stats = sim.rest_stats
    expected = active(2300)
    assert len(expected) > 2000  # three pages of 1000
    assert tickers == expected
    assert "BRK.B" in tickers and "AMpB" in tickers
    assert stats.requests == stats.ok == 3
    assert stats.keys_seen_in_header == 3 and stats.unauthorized == 0
    assert stats.keys_seen_in_query == 0  # next_url carries no key; it is never added there


@pytest.mark.parametrize("limit", [1, 25, 1000, 1500])
async def test_limit_is_honoured(limit: int) -> None:
    async with simulator(extra_tickers=2300) as sim:
        tickers = await discover_tickers(sim.rest_base, KEY, limit=limit)
        stats = sim.rest_stats
    assert tickers == active(2300)[:limit]
    assert stats.requests == -(-limit // 1000)  # pages of min(limit, 1000): no extra page


async def test_a_bad_key_fails_without_retrying() -> None:
    async with simulator() as sim:
        with pytest.raises(TickerDiscoveryError, match="401.*Unknown API Key"):
            await discover_tickers(sim.rest_base, "wrong-key", backoff_s=0.01)
        assert sim.rest_stats.requests == sim.rest_stats.unauthorized == 1


async def test_repeated_cursor_stops_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    async with simulator(extra_tickers=3500) as sim:
        sim.faults.rest_repeat_cursor(after_pages=3)  # page 3's next_url loops to page 2
        tickers = await discover_tickers(sim.rest_base, KEY, timeout_s=5)
        stats = sim.rest_stats
    assert tickers == active(3500)[:3000]
    assert stats.requests == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("repeats a cursor" in m for m in warnings)


async def test_429_then_success() -> None:
    async with simulator(extra_tickers=1200) as sim:
        sim.faults.rest_fail(429, count=2)
        tickers = await discover_tickers(sim.rest_base, KEY, backoff_s=0.01)
        stats = sim.rest_stats
    assert tickers == active(1200)
    assert stats.faults_injected == 2 and stats.ok == 2 and stats.requests == 4


async def test_a_5xx_mid_walk_is_retried_on_the_same_page() -> None:
    async with simulator(extra_tickers=2300) as sim:
        answered: list[int] = []

        async def after_each(_: Any, __: Any, params: aiohttp.TraceRequestEndParams) -> None:
            answered.append(params.response.status)
            if len(answered) == 1:  # page 1 done: the next request (page 2) fails twice
                sim.faults.rest_fail(503, count=2)

        trace = aiohttp.TraceConfig()
        trace.on_request_end.append(after_each)
        async with aiohttp.ClientSession(trace_configs=[trace]) as http:
            tickers = await discover_tickers(sim.rest_base, KEY, session=http, backoff_s=0.01)
    assert tickers == active(2300)
    assert answered == [200, 503, 503, 200, 200]


async def test_500s_beyond_the_attempts_fail() -> None:
    async with simulator() as sim:
        sim.faults.rest_fail(500, count=5)
        with pytest.raises(TickerDiscoveryError, match=r"failed 3 times; last: HTTP 500"):
            await discover_tickers(sim.rest_base, KEY, attempts=3, backoff_s=0.01)
        assert sim.rest_stats.requests == 3 and sim.rest_stats.ok == 0


async def test_an_unreachable_endpoint_fails_after_the_attempts() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(TickerDiscoveryError, match="failed 2 times") as failure:
        await discover_tickers(f"http://127.0.0.1:{port}", KEY, attempts=2, backoff_s=0.01)
    assert KEY not in str(failure.value)


async def test_a_caller_session_is_used_and_left_open() -> None:
    async with simulator(extra_tickers=10) as sim, aiohttp.ClientSession() as http:
        tickers = await discover_tickers(sim.rest_base + "/", KEY, session=http)
        assert not http.closed
        assert tickers == active(10)
        again = await discover_tickers(sim.rest_base, KEY, session=http, limit=3)
        assert again == tickers[:3]
