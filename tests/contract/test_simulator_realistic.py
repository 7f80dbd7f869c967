"""The simulator with the realistic market, over real loopback sockets."""

from __future__ import annotations

import time

import pytest

from tests.contract.test_simulator import collect, session, simulator, subscribe

pytestmark = pytest.mark.integration


async def test_realistic_delayed_host_sends_what_was_asked_never_from_the_future() -> None:
    async with simulator(market="realistic", max_events=400) as sim:
        async with session(sim.delayed_url) as ws:
            await ws.send(subscribe("T.AAPL,Q.AAPL,Q.F"))
            events, frames = await collect(ws, 400)
            received_ms = time.time() * 1000
        assert {(e["ev"], e["sym"]) for e in events} <= {("T", "AAPL"), ("Q", "AAPL"), ("Q", "F")}
        assert all(e["t"] <= received_ms for e in events)  # lag >= 0
        assert [e["t"] for e in events if e["sym"] == "AAPL"] == sorted(
            e["t"] for e in events if e["sym"] == "AAPL"
        )
        quotes = [e for e in events if e["ev"] == "Q" and e["sym"] == "AAPL"]
        assert quotes and all(0.01 <= round(q["ap"] - q["bp"], 4) <= 0.1 for q in quotes)
        assert sim.truth.total == 400
        assert all(len([e for e in f if e.get("ev") != "status"]) <= 50 for f in frames)


async def test_realistic_realtime_host_sends_fmv_each_second_in_ns() -> None:
    async with simulator(market="realistic", fmv_time_unit="ns", session="midday") as sim:
        async with session(sim.realtime_url) as ws:
            await ws.send(subscribe("FMV.*,AM.*"))
            started = time.time()
            events, _ = await collect(ws, 48)  # two seconds of 24 symbols
            elapsed = time.time() - started
        assert {e["ev"] for e in events} == {"FMV"}  # no bar before a whole minute
        assert 0.9 < elapsed < 4.0
        assert all(e["t"] > 10**18 and e["t"] <= time.time() * 1e9 for e in events)
        aapl = [e["fmv"] for e in events if e["sym"] == "AAPL"]
        assert aapl and all(150 < v < 250 for v in aapl)
