"""Silent connections (issue 13): a flow that a NAT or load balancer dropped, no FIN, no RST.

The feed runs for real against the simulator through a real TCP proxy
(``bench.soak.proxy.TcpProxy``) that can stop forwarding on its open connections while
keeping their sockets open. The idle timeout is shrunk to 1 s (the default, 10 s, is
measured in docs/reliability.md); every wait here is generous, no speed is asserted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from bench.soak.proxy import TcpProxy

from polygon_adapters.polygon_ws import PolygonWebSocketFeed
from polygon_core.subscriptions import FeedRole
from polygon_sim.server import PolygonSimulator
from tests.contract.test_feed import FEED_LOGGER, Recorder, feed_for, more_data, running, simulator
from tests.helpers import eventually

pytestmark = pytest.mark.integration

IDLE_S = 1.0
RT, DL = FeedRole.REALTIME, FeedRole.DELAYED


@asynccontextmanager
async def behind_proxy(**options: Any) -> AsyncIterator[tuple[PolygonSimulator, TcpProxy]]:
    async with simulator(**options) as sim:
        port = int(sim.url(DL).rsplit(":", 1)[1])
        proxy = TcpProxy(port)
        await proxy.up()
        try:
            yield sim, proxy
        finally:
            await proxy.down()


def through(proxy: TcpProxy, idle_timeout_s: float = IDLE_S) -> PolygonWebSocketFeed:
    return feed_for(f"ws://127.0.0.1:{proxy.port}", DL, idle_timeout_s=idle_timeout_s)


def streams_on(feed: PolygonWebSocketFeed, connects: int) -> bool:
    return feed.stats.connects == connects and feed.stats.state == "streaming"


def silent_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == FEED_LOGGER and "nothing received for" in r.getMessage()
    ]


async def test_silent_while_streaming_is_replaced_and_data_resumes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=FEED_LOGGER)
    async with behind_proxy(events_per_second=2000) as (sim, proxy):
        feed, record = through(proxy), Recorder()
        async with running(feed, record):
            await eventually(lambda: streams_on(feed, 1))
            await more_data(record)
            assert proxy.silence() == 1
            await asyncio.sleep(0.2)  # what was in flight has arrived
            frozen = record.total
            await eventually(lambda: streams_on(feed, 2), within_s=4 * IDLE_S + 2)
            assert record.total >= frozen  # nothing came while silent ...
            await more_data(record)  # ... and data flows again on the new connection
    assert feed.stats.disconnects == {"idle_timeout": 1}
    assert proxy.connections == 2
    (line,) = silent_lines(caplog)
    silent_s = float(line.split("nothing received for ")[1].split(" s")[0])
    assert 0.8 * IDLE_S - 0.1 <= silent_s <= 0.8 * IDLE_S + 0.05  # dead at 80 %


async def test_quiet_market_is_kept_by_pings_and_replaced_once_silent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No events at all: pongs keep the connection through several idle timeouts; once the
    proxy is silent too (no pong), it is replaced."""
    caplog.set_level(logging.INFO, logger=FEED_LOGGER)
    async with behind_proxy(max_events=0) as (sim, proxy):
        feed, record = through(proxy), Recorder()
        async with running(feed, record):
            await eventually(lambda: streams_on(feed, 1) and feed.stats.acked_topics == 2)
            frames = feed.stats.frames
            await asyncio.sleep(4 * IDLE_S)
            assert feed.stats.frames == frames  # no data frame came: only pongs
            assert streams_on(feed, 1) and not feed.stats.disconnects
            proxy.silence()
            await eventually(lambda: streams_on(feed, 2), within_s=4 * IDLE_S + 2)
    assert feed.stats.disconnects == {"idle_timeout": 1}
    assert record.total == 0
    assert len(silent_lines(caplog)) == 1


async def test_busy_feed_whose_pongs_never_come_is_not_cut() -> None:
    """Client-to-server traffic dropped (our pings never arrive, so no pong ever comes) while
    the server's data keeps arriving: frames are proof of life, the connection is kept.

    A longer idle timeout than the other tests (3 s: no pong could come within 12 s, so a
    feed that did not count frames would be cut three times over): with 1 s, a CI run saw
    a 0.8 s pause in delivery on a 2,000 events/s feed and the connection replaced."""
    idle_s = 3 * IDLE_S
    async with behind_proxy(events_per_second=2000) as (sim, proxy):
        feed, record = through(proxy, idle_s), Recorder()
        async with running(feed, record):
            await eventually(lambda: streams_on(feed, 1))
            proxy.silence("upstream")
            await asyncio.sleep(4 * idle_s)
            await more_data(record)
            assert streams_on(feed, 1) and not feed.stats.disconnects
    assert proxy.connections == 1
