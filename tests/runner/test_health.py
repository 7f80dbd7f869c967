"""/healthz and /metrics over HTTP, driven by real objects (feeds not connected)."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp

from polygon_adapters.memory import InMemoryLatestStore, ManualClock
from polygon_adapters.polygon_ws import PolygonWebSocketFeed
from polygon_adapters.runtime import AsyncioScheduler
from polygon_core.backoff import ReconnectPolicy
from polygon_core.codec import decode_frame
from polygon_core.ingest import Ingest
from polygon_core.subscriptions import FeedRole, SymbolSelection
from polygon_runner.health import HealthReport, HealthServer, Metrics
from tests.strategies import dumps

ROOT = Path(__file__).resolve().parents[2]


def feed(role: FeedRole, clock: ManualClock) -> PolygonWebSocketFeed:
    policy = ReconnectPolicy(random=lambda: 0.5)
    return PolygonWebSocketFeed(
        role, "ws://127.0.0.1:1", "k", SymbolSelection(False, ("AAPL",)), policy=policy, clock=clock
    )


async def test_healthz_and_metrics() -> None:
    clock = ManualClock()
    store = InMemoryLatestStore()
    metrics = Metrics()
    ingest = Ingest(store, clock, AsyncioScheduler(), flush_observer=metrics.observe_flush)
    feeds = [feed(FeedRole.REALTIME, clock), feed(FeedRole.DELAYED, clock)]
    report = HealthReport(ingest, feeds, None, clock)
    server = HealthServer(report, metrics, port=0, host="127.0.0.1")
    await server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/healthz") as r:
                assert r.status == 503
                body = await r.json()
                assert body["ok"] is False and len(body["reasons"]) == 2
            for f in feeds:
                f.stats.authenticated = True
            now = clock.time_ms()
            ingest.on_frame(
                decode_frame(
                    dumps(
                        [
                            {"ev": "T", "sym": "AAPL", "p": 1, "s": 1, "t": now - 250},
                            {"ev": "AM", "sym": "AAPL", "s": now - 61_000, "e": now - 1000,
                             "o": 1, "h": 1, "l": 1, "c": 1, "v": 1, "vw": 1},
                            {"ev": "LULD", "T": "X"},
                        ]
                    )
                ),
                now,
            )  # fmt: skip
            assert await ingest.flush_once()
            async with http.get(base + "/healthz") as r:
                assert r.status == 200 and (await r.json())["ok"] is True
            async with http.get(base + "/metrics") as r:
                text = await r.text()
            assert 'polygon_events_total{channel="T"} 1.0' in text
            assert 'polygon_rejects_total{reason="unknown_ev"} 1.0' in text
            assert "polygon_redis_writes_total 2.0" in text
            assert 'polygon_feed_up{feed="delayed"} 1.0' in text
            assert "polygon_redis_flush_seconds_count 1.0" in text
            lag = dict(re.findall(r'polygon_lag_seconds\{channel="(\w+)"\} ([\d.e+-]+)', text))
            assert float(lag["T"]) == 0.25 and float(lag["AM"]) == 1.0  # AM: from the bar end
            store.available = False
            ingest.on_frame(
                decode_frame(dumps([{"ev": "T", "sym": "B", "p": 1, "s": 1, "t": 1}])), now
            )
            assert not await ingest.flush_once()
            async with http.get(base + "/healthz") as r:
                assert r.status == 503
                assert "store" in " ".join((await r.json())["reasons"])
            snapshot = report.snapshot(delta=True)
            assert snapshot["events"]["T"] == 2 and snapshot["store_outage"] is True
    finally:
        await server.stop()


async def test_a_standby_holding_values_is_not_a_failing_store() -> None:
    """A task fenced in a store outage holds what it could not write (HA) and may not
    write it: its health must not say the store is failing (ECS would replace it and the
    values with it); whether the store answers is the lease's check."""
    clock = ManualClock()
    store = InMemoryLatestStore()
    store.available = False
    ingest = Ingest(store, clock, AsyncioScheduler())
    report = HealthReport(ingest, [], None, clock)
    trade = {"ev": "T", "sym": "B", "p": 1, "s": 1, "t": 1}
    ingest.on_frame(decode_frame(dumps([trade])), clock.time_ms())
    assert not await ingest.flush_once()
    assert not report.store_ok()[0]
    ingest.hold()
    clock.advance(120.0)  # past STORE_STALE_S with values waiting
    assert report.store_ok() == (True, "ok") and len(ingest.buffer) == 1


def test_env_example_lists_every_setting() -> None:
    source = (ROOT / "src/polygon_runner/settings.py").read_text()
    read = set(
        re.findall(r'r\.(?:required|raw|flag|integer|number|parse)\(\s*"([A-Z0-9_]+)"', source)
    )
    read |= set(re.findall(r'\("(?:\w+)", "([A-Z0-9_]+_TTL_SEC)"', source))
    example = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert len(read) > 30
    missing = read - example - {"AWS_DEFAULT_REGION"}
    assert not missing, f".env.example lacks {sorted(missing)}"
