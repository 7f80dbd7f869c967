"""Integration tests of the feed adapter against the local Polygon simulator (loopback).

``PolygonWebSocketFeed`` is run for real: the simulator listens on port 0 in-process and
records its ground truth (what it delivered, to which connection, which topics each held,
how many authenticated connections a host had at once). Backoffs are shrunk through
``ReconnectPolicy(initial_ms=50, ...)``; the long cooldowns of ``auth_failed`` and
``max_connections`` are asserted through the policy's ``retry_at_s`` and a short quiet
window, never by sleeping a minute.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from itertools import pairwise
from typing import Any

import pytest
from websockets.asyncio.client import connect

from polygon_adapters.polygon_ws import PolygonWebSocketFeed
from polygon_adapters.runtime import SystemClock
from polygon_core.backoff import ReconnectPolicy
from polygon_core.codec import DecodedFrame
from polygon_core.subscriptions import FeedRole, SymbolSelection, subscription_topics
from polygon_sim.faults import MIB, GarbageKind
from polygon_sim.server import PolygonSimulator, SimulatorConfig
from polygon_sim.tickers import DEFAULT_SYMBOLS
from tests.helpers import eventually

pytestmark = pytest.mark.integration

KEY = "pk-live-Zq8RfeedKEY-7c41d2"
"""Distinctive, so a leak into any log record is unmistakable."""
RT, DL = FeedRole.REALTIME, FeedRole.DELAYED
SEVEN = ("AAPL", "BRK.B", "AMpB", "MSFT", "T", "A", "BACpB")
"""Seven symbols: dots, lowercase preferreds, one-letter tickers equal to channel names."""
FEED_LOGGER = "polygon_adapters.polygon_ws"


class Recorder:
    """The frame handler: counts what reached it, per channel and per reject reason."""

    def __init__(self) -> None:
        self.frames = 0
        self.counts: Counter[str] = Counter()
        self.symbols: set[tuple[str, str]] = set()
        self.rejects: Counter[str] = Counter()
        self.largest = 0
        self.receive_ms: list[int] = []

    def __call__(self, frame: DecodedFrame, receive_ms: int) -> None:
        self.frames += 1
        self.receive_ms.append(receive_ms)
        self.largest = max(self.largest, len(frame.events))
        for event in frame.events:
            self.counts[event.channel.value] += 1
            self.symbols.add((event.channel.value, event.symbol))
        for reject in frame.rejects:
            self.rejects[reject.reason.value] += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@asynccontextmanager
async def simulator(**options: Any) -> AsyncIterator[PolygonSimulator]:
    options.setdefault("api_key", KEY)
    options.setdefault("rest", False)
    async with PolygonSimulator(SimulatorConfig(**options)) as sim:
        yield sim


def policy(
    min_cooldown_s: float = 60.0, rand: Any = random.random, **options: Any
) -> ReconnectPolicy:
    """Small backoffs (50 ms doubling up to 200 ms); the cooldown floor stays 60 s unless
    ``min_cooldown_s`` says otherwise."""
    options.setdefault("initial_ms", 50)
    options.setdefault("max_ms", 200)
    return ReconnectPolicy(random=rand, min_cooldown_s=min_cooldown_s, **options)


def feed_for(
    url: str,
    role: FeedRole,
    symbols: Sequence[str] = ("*",),
    *,
    key: str = KEY,
    reconnect: ReconnectPolicy | None = None,
    **options: Any,
) -> PolygonWebSocketFeed:
    return PolygonWebSocketFeed(
        role,
        url,
        key,
        SymbolSelection.of(symbols),
        policy=reconnect or policy(),
        clock=SystemClock(),
        **options,
    )


@asynccontextmanager
async def running(
    feed: PolygonWebSocketFeed, handler: Recorder
) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``feed`` in a task; on exit close it and require ``run()`` to return promptly
    (re-raising whatever it crashed with)."""
    task = asyncio.create_task(feed.run(handler))
    try:
        yield task
    finally:
        await feed.aclose()
        async with asyncio.timeout(3):
            await task


async def more_data(*records: Recorder, events: int = 20) -> None:
    """Wait until every recorder got ``events`` more events than it has now."""
    before = [record.total for record in records]
    await eventually(
        lambda: all(r.total > n + events for r, n in zip(records, before, strict=True))
    )


def streaming(feeds: Iterable[PolygonWebSocketFeed], connects: int) -> Callable[[], bool]:
    """A condition: every feed streams on its ``connects``-th connection."""
    feeds = list(feeds)
    return lambda: all(f.stats.connects == connects and f.stats.state == "streaming" for f in feeds)


def sent_subscriptions(records: list[logging.LogRecord]) -> list[str]:
    """``params`` of the subscribe frames the feed logged as sent (``debug=True``)."""
    params = []
    for record in records:
        message = record.getMessage()
        if record.name == FEED_LOGGER and " >>> " in message:
            body = json.loads(message.split(" >>> ", 1)[1])
            if body["action"] == "subscribe":
                params.append(body["params"])
    return params


def expected_topics(role: FeedRole, symbols: Sequence[str]) -> list[str]:
    return subscription_topics(role.channels, SymbolSelection.of(symbols))


# handshake and subscription plan


@pytest.mark.parametrize("role", [RT, DL])
@pytest.mark.parametrize(
    ("ack_style", "pack", "connected"),
    [("one_frame", True, "connected"), ("frame_per_topic", False, "success")],
    ids=["acks-in-data-frames", "ack-per-frame-spec-connected"],
)
async def test_handshake_and_batched_plan(
    role: FeedRole, ack_style: str, pack: bool, connected: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=FEED_LOGGER)
    a, b = role.channels[0].value, role.channels[1].value
    config = {"ack_style": ack_style, "pack_status_with_data": pack, "connected_status": connected}
    async with simulator(max_events=2000, **config) as sim:
        feed = feed_for(sim.url(role), role, SEVEN, batch_size=3, debug=True)
        record = Recorder()
        started_ms = time.time_ns() // 1_000_000
        async with running(feed, record) as task:
            await sim.truth.wait_total(2000)
            await eventually(lambda: record.total == 2000)
            await eventually(lambda: feed.stats.acked_topics == 14)
            assert not task.done()
        ended_ms = time.time_ns() // 1_000_000

    # the plan: 3 messages of at most 3 symbols, each expanded to the host's channels;
    # every topic sent exactly once, case and dots kept
    assert sent_subscriptions(caplog.records) == [
        f"{a}.AAPL,{b}.AAPL,{a}.BRK.B,{b}.BRK.B,{a}.AMpB,{b}.AMpB",
        f"{a}.MSFT,{b}.MSFT,{a}.T,{b}.T,{a}.A,{b}.A",
        f"{a}.BACpB,{b}.BACpB",
    ]
    host = sim.truth.hosts[role]
    (conn,) = host.connections.values()
    assert conn.subscribe_requests == 3
    assert conn.topics == set(expected_topics(role, SEVEN))
    assert host.max_authenticated == 1
    assert host.events == 2000

    # every delivered event reached the handler, per channel, and nothing else did
    assert record.counts == Counter(host.counts)
    assert {symbol for _, symbol in record.symbols} <= set(SEVEN)
    assert {"BRK.B", "AMpB"} <= {symbol for _, symbol in record.symbols}
    assert {channel for channel, _ in record.symbols} == {a, b}
    assert not record.rejects
    assert all(started_ms <= ms <= ended_ms for ms in record.receive_ms)

    stats = feed.stats
    assert stats.connects == 1 and not stats.disconnects
    assert stats.topics == stats.acked_topics == 14
    assert stats.events == 2000 and stats.frames >= 2000 // 50
    assert stats.last_frame_ms is not None and started_ms <= stats.last_frame_ms <= ended_ms
    assert stats.authenticated and not stats.subscribe_errors
    assert stats.state == "closed"


@pytest.mark.parametrize(("role", "params"), [(RT, "AM.*,FMV.*"), (DL, "T.*,Q.*")])
async def test_wildcard_subscribes_one_topic_per_channel(
    role: FeedRole, params: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with simulator(max_events=3000) as sim:
        feed = feed_for(sim.url(role), role, ("*",), batch_size=3, debug=True)
        record = Recorder()
        async with running(feed, record):
            await sim.truth.wait_total(3000)
            await eventually(lambda: record.total == 3000)
            await eventually(lambda: feed.stats.acked_topics == 2)
    assert sent_subscriptions(caplog.records) == [params]
    host = sim.truth.hosts[role]
    (conn,) = host.connections.values()
    assert conn.topics == set(params.split(",")) and conn.subscribe_requests == 1
    assert record.counts == Counter(host.counts)
    assert {symbol for _, symbol in record.symbols} == set(DEFAULT_SYMBOLS)


async def test_without_debug_no_frames_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with simulator(max_events=500) as sim:
        record = Recorder()
        async with running(feed_for(sim.delayed_url, DL), record):
            await eventually(lambda: record.total == 500)
    messages = [r.getMessage() for r in caplog.records if r.name == FEED_LOGGER]
    assert messages and not [m for m in messages if " >>> " in m or " <<< " in m]


# reconnects


async def test_repeated_drops_of_both_hosts_reconnect_with_backoff() -> None:
    symbols = ("AAPL", "BRK.B", "AMpB", "MSFT", "T")
    async with simulator(events_per_second=4000) as sim:
        policies = {role: policy(rand=lambda: 0.0) for role in FeedRole}  # no jitter
        feeds = {
            role: feed_for(sim.url(role), role, symbols, batch_size=2, reconnect=policies[role])
            for role in FeedRole
        }
        records = {role: Recorder() for role in FeedRole}
        faults: list[Callable[[], int]] = [
            lambda: sim.faults.drop(code=1000),
            lambda: sim.faults.drop(code=1001),
            lambda: sim.faults.drop(code=None),  # abrupt: no close frame
            lambda: sim.faults.disconnect("force_disconnect", code=1001),
        ]
        async with AsyncExitStack() as stack:
            for role in FeedRole:
                await stack.enter_async_context(running(feeds[role], records[role]))
            for number, fault in enumerate(faults, start=1):
                await more_data(*records.values())
                assert fault() == 2
                await eventually(streaming(feeds.values(), connects=number + 1))
            await more_data(*records.values())

    for role in FeedRole:
        stats = feeds[role].stats
        assert stats.connects == 5
        assert stats.disconnects == Counter({"drop": 3, "force_disconnect": 1})
        assert policies[role].attempt == 4  # never reset by auth_success
        host = sim.truth.hosts[role]
        assert host.max_authenticated == 1  # never two live connections on one host
        connections = sorted(host.connections.values(), key=lambda c: c.opened_at_s)
        assert len(connections) == 5
        for conn in connections:  # re-authenticated, re-subscribed everything, data flowed
            assert conn.authenticated_at_s is not None
            assert conn.subscribe_requests == 3
            assert conn.topics == set(expected_topics(role, symbols))
            assert conn.events > 0
        kills = [
            e for e in sim.truth.log if e.host == role and e.kind in ("dropped", "disconnected")
        ]
        assert len(kills) == 4
        delays = (0.05, 0.1, 0.2, 0.2)  # 50 ms doubling, capped at 200 ms
        for kill, after, delay in zip(kills, connections[1:], delays, strict=True):
            assert after.opened_at_s - kill.at_s >= delay - 0.005
        closes = [e.code for e in sim.truth.events_of("closed", role)]
        assert sorted(c for c in closes if c is not None) == sorted([1000, 1000, 1001, 1001, 1006])


async def test_unreachable_host_is_retried_with_backoff() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    feed = feed_for(f"ws://127.0.0.1:{port}", RT, reconnect=policy(rand=lambda: 0.0))
    record = Recorder()
    started = time.monotonic()
    async with running(feed, record):
        await eventually(lambda: feed.stats.disconnects["connect_failed"] >= 3)
        assert time.monotonic() - started >= 0.05 + 0.1
    assert feed.stats.connects == 0 and record.frames == 0


@pytest.mark.parametrize(
    ("server_timeout_s", "reason"), [(0.1, "auth_timeout"), (None, "handshake_timeout")]
)
async def test_a_stalled_handshake_ends_and_is_retried(
    server_timeout_s: float | None, reason: str
) -> None:
    # a first status the session does not know: no auth is sent, so the handshake stalls
    # until the server says auth_timeout, or the feed's own handshake timeout fires
    async with simulator(connected_status="hello", auth_timeout_s=server_timeout_s) as sim:
        feed = feed_for(sim.realtime_url, RT, handshake_timeout_s=0.2)
        async with running(feed, Recorder()):
            await eventually(lambda: feed.stats.disconnects[reason] >= 2)
    assert set(feed.stats.disconnects) == {reason}
    assert not sim.truth.events_of("authenticated")


# auth_failed and max_connections: long cooldowns


async def test_auth_failed_waits_a_long_cooldown_and_aclose_is_prompt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with simulator() as sim:
        reconnect = policy()  # 50 ms .. 200 ms backoff, the default 60 s cooldown floor
        feed = feed_for(sim.realtime_url, RT, ("AAPL",), key="not-the-key", reconnect=reconnect)
        record = Recorder()
        async with running(feed, record) as task:
            await eventually(lambda: feed.stats.disconnects["auth_failed"] == 1)
            assert reconnect.retry_at_s is not None
            assert reconnect.retry_at_s - time.monotonic() >= 59
            await asyncio.sleep(0.4)  # many ordinary backoffs would have passed
            assert len(sim.truth.events_of("opened")) == 1
            assert len(sim.truth.events_of("auth_failed")) == 1
            assert feed.stats.state == "waiting" and not feed.stats.authenticated
            closing = time.monotonic()
            await feed.aclose()
            async with asyncio.timeout(0.5):
                await task
            assert time.monotonic() - closing < 0.5
    assert feed.stats.state == "closed" and feed.stats.connects == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("auth_failed" in m and "POLYGON_API_KEY" in m for m in errors)


async def test_a_cooldown_cut_short_by_a_fence_is_kept_after_reopen() -> None:
    """HA: the lease lost during a cooldown (``abort``), then taken again (``reopen``, a new
    ``run``): the feed first waits out what was left of the cooldown instead of dialling
    at once (found by the soak: an eviction's 60 s cooldown ended after 3 s)."""
    async with simulator() as sim:
        reconnect = policy(min_cooldown_s=1.5)
        feed = feed_for(sim.realtime_url, RT, ("AAPL",), key="not-the-key", reconnect=reconnect)
        record = Recorder()
        first = asyncio.create_task(feed.run(record))
        await eventually(lambda: feed.stats.disconnects["auth_failed"] == 1)
        failed = time.monotonic()
        feed.abort()
        await asyncio.wait_for(first, 1)
        feed.reopen()
        async with running(feed, record):
            await asyncio.sleep(0.8)
            assert len(sim.truth.events_of("opened")) == 1
            await eventually(lambda: len(sim.truth.events_of("opened")) == 2, 5)
            assert time.monotonic() - failed >= 1.4


async def test_auth_failed_burst_then_success_after_the_cooldown() -> None:
    async with simulator(events_per_second=2000) as sim:
        sim.faults.reject_auth(2)
        # cooldown = max(max backoff 0.2 s, floor 0.05 s): above every ordinary delay here
        feed = feed_for(sim.delayed_url, DL, ("AAPL", "AMpB"), reconnect=policy(0.05))
        record = Recorder()
        async with running(feed, record):
            await eventually(lambda: feed.stats.state == "streaming" and record.total > 50)
    assert feed.stats.disconnects == Counter({"auth_failed": 2})
    assert feed.stats.connects == 3
    opened = [e.at_s for e in sim.truth.events_of("opened")]
    assert len(opened) == 3
    assert all(later - earlier >= 0.2 - 0.005 for earlier, later in pairwise(opened))
    (last,) = [c for c in sim.truth.hosts[DL].connections.values() if c.authenticated_at_s]
    assert last.topics == {"T.AAPL", "Q.AAPL", "T.AMpB", "Q.AMpB"}


@pytest.mark.parametrize("how", ["fault", "second-client"])
async def test_max_connections_eviction_waits_at_least_60_s(
    how: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with simulator(events_per_second=2000) as sim, AsyncExitStack() as stack:
        reconnect = policy()
        feed = feed_for(sim.realtime_url, RT, ("*",), reconnect=reconnect)
        record = Recorder()
        await stack.enter_async_context(running(feed, record))
        await eventually(lambda: record.total > 20)
        if how == "fault":
            assert sim.faults.evict(RT) == 1
        else:  # another client with the same key takes the slot; the older is evicted
            other = await stack.enter_async_context(connect(f"{sim.realtime_url}/stocks"))
            await other.recv()
            await other.send(json.dumps({"action": "auth", "params": KEY}))
            assert json.loads(await other.recv())[0]["status"] == "auth_success"
        await eventually(lambda: feed.stats.disconnects["max_connections"] == 1)
        assert reconnect.retry_at_s is not None
        assert reconnect.retry_at_s - time.monotonic() >= 59
        await asyncio.sleep(0.4)
        assert feed.stats.connects == 1 and feed.stats.state == "waiting"
        assert len(sim.truth.events_of("opened", RT)) == (1 if how == "fault" else 2)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("max_connections" in m and "60 s" in m for m in errors)


async def test_after_an_eviction_cooldown_the_feed_comes_back() -> None:
    async with simulator(events_per_second=2000) as sim:
        feed = feed_for(sim.realtime_url, RT, ("BRK.B",), reconnect=policy(0.1))
        record = Recorder()
        async with running(feed, record):
            await eventually(lambda: record.total > 10)
            sim.faults.evict(RT)
            await eventually(streaming([feed], connects=2))
            await more_data(record)
    evicted = sim.truth.events_of("evicted")[0].at_s
    second = max(c.opened_at_s for c in sim.truth.hosts[RT].connections.values())
    assert second - evicted >= 0.2 - 0.005  # max(max backoff, floor)
    assert feed.stats.disconnects == Counter({"max_connections": 1})
    assert sim.truth.hosts[RT].max_authenticated == 1


# frame sizes and bad input


async def test_a_2_mib_frame_is_accepted() -> None:
    async with simulator(max_events=40_000) as sim:
        sim.faults.oversize(2 * MIB, DL)
        feed = feed_for(sim.delayed_url, DL)  # max_frame_bytes: 16 MiB by default
        record = Recorder()
        async with running(feed, record):
            await sim.truth.wait_total(40_000)
            await eventually(lambda: record.total == 40_000)
    assert record.largest > 10_000
    assert feed.stats.bytes >= 2 * MIB
    assert record.counts == Counter(sim.truth.hosts[DL].counts)
    assert feed.stats.connects == 1 and not feed.stats.disconnects


async def test_a_frame_over_the_limit_drops_the_connection_and_the_feed_reconnects() -> None:
    async with simulator(events_per_second=5000) as sim:
        sim.faults.oversize(2 * MIB, DL)
        feed = feed_for(sim.delayed_url, DL, max_frame_bytes=1 * MIB)
        record = Recorder()
        async with running(feed, record) as task:
            await eventually(streaming([feed], connects=2))
            await more_data(record)
            assert not task.done()
    assert feed.stats.disconnects == Counter({"drop": 1})
    assert record.largest < 10_000  # the big frame never reached the handler
    first = min(sim.truth.hosts[DL].connections.values(), key=lambda c: c.opened_at_s)
    assert first.close_code == 1009  # message too big, from the client


async def test_garbage_and_unknown_events_are_counted_and_the_connection_survives() -> None:
    async with simulator(max_events=3000) as sim:
        for kind in GarbageKind:
            sim.faults.garbage(kind, DL)
        feed = feed_for(sim.delayed_url, DL, ("*",))
        record = Recorder()
        async with running(feed, record):
            await sim.truth.wait_total(3000)
            await eventually(lambda: record.total == 3000)
            await eventually(lambda: sum(record.rejects.values()) == 9)
    expected = Counter(
        invalid_json=3,  # a truncated array, a NaN token, and bytes that are not UTF-8
        not_array=1,
        unknown_ev=2,  # XYZ and LULD
        invalid_type=1,  # a string price
        missing_field=1,  # a quote without bp
        bad_symbol=1,  # "AA PL"
    )
    assert record.rejects == expected
    assert feed.stats.rejects_by_reason == expected
    assert sim.truth.hosts[DL].connections[1].garbage == len(GarbageKind)
    assert record.counts == Counter(sim.truth.hosts[DL].counts)  # no garbage became an event
    assert feed.stats.connects == 1 and not feed.stats.disconnects


# logs and shutdown


async def test_debug_logs_show_frames_but_never_the_key(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # root at DEBUG, websockets included
    async with simulator(events_per_second=2000) as sim:
        sim.faults.reject_auth(1)
        feed = feed_for(sim.delayed_url, DL, ("AAPL", "BRK.B"), reconnect=policy(0.05), debug=True)
        record = Recorder()
        async with running(feed, record):
            await eventually(lambda: feed.stats.state == "streaming" and record.total > 20)
            sim.faults.drop(code=None)
            await eventually(streaming([feed], connects=3))
            assert KEY not in repr(feed) and KEY not in str(feed)
    # the simulator plays Polygon and legitimately sees the key: its own records are excluded
    ours = [
        r for r in caplog.records if not r.name.startswith(("websockets.server", "polygon_runner"))
    ]
    messages = [r.getMessage() for r in ours]
    assert any('>>> {"action":"auth","params":"***"}' in m for m in messages)
    assert any(
        '>>> {"action":"subscribe","params":"T.AAPL,Q.AAPL,T.BRK.B,Q.BRK.B"}' in m for m in messages
    )
    assert any("<<< " in m and "auth_success" in m for m in messages)
    assert any("<<< " in m and ('"ev":"T"' in m or '"ev":"Q"' in m) for m in messages)
    assert any("auth_failed" in m for m in messages)
    for item in ours:
        assert KEY not in item.getMessage()
        assert KEY not in repr(item.args) and KEY not in str(item.msg)
        assert KEY not in repr(vars(item))
    assert KEY not in repr(feed)


async def test_aclose_while_streaming_is_prompt() -> None:
    async with simulator() as sim:  # as fast as the feed reads
        feed = feed_for(sim.delayed_url, DL)
        record = Recorder()
        task = asyncio.create_task(feed.run(record))
        await eventually(lambda: record.total > 5000)
        closing = time.monotonic()
        await feed.aclose()
        async with asyncio.timeout(2.5):  # the close timeout is 2 s
            await task
        assert time.monotonic() - closing < 1.0  # no stall behind the queued data
        assert feed.stats.state == "closed" and not feed.stats.disconnects


async def test_aclose_while_dialling_stops_the_feed() -> None:
    async with simulator(max_events=100) as sim:
        feed = feed_for(sim.realtime_url, RT)
        record = Recorder()
        task = asyncio.create_task(feed.run(record))
        await asyncio.sleep(0)  # run() is now inside connect()
        assert feed.stats.state == "connecting"
        await feed.aclose()
        async with asyncio.timeout(2):
            await task
        await asyncio.sleep(0.1)
        assert feed.stats.state == "closed" and feed.stats.connects == 0
        assert not sim.truth.events_of("authenticated")
        assert record.frames == 0


async def test_close_codes_and_handshake_frames_are_counted() -> None:
    """Frames read during the handshake count too; close codes are kept per code."""
    async with simulator(events_per_second=2000) as sim:
        feed = feed_for(sim.delayed_url, DL, ["AAPL"])
        async with running(feed, Recorder()):
            await eventually(lambda: feed.stats.events > 0)
            assert feed.stats.frames >= 3  # connected, auth_success, acks/data
            sim.faults.drop("delayed", code=1001)
            await eventually(lambda: feed.stats.close_codes[1001] == 1)
            await eventually(lambda: feed.stats.connects == 2)


async def test_aclose_while_dialling_a_silent_host_returns_at_once() -> None:
    """A host that accepts TCP but never answers the upgrade: aclose() must not wait 10 s."""
    writers: list[asyncio.StreamWriter] = []
    server = await asyncio.start_server(lambda r, w: writers.append(w), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    feed = feed_for(f"ws://127.0.0.1:{port}", RT, ["AAPL"])
    task = asyncio.create_task(feed.run(Recorder()))
    await eventually(lambda: bool(writers))
    started = asyncio.get_running_loop().time()
    await feed.aclose()
    await asyncio.wait_for(task, timeout=2)
    assert asyncio.get_running_loop().time() - started < 1.0
    for writer in writers:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_an_unexpected_error_on_a_frame_reconnects_instead_of_ending_the_feed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Failing(Recorder):
        failed = False

        def __call__(self, frame: DecodedFrame, receive_ms: int) -> None:
            if frame.events and not self.failed:
                self.failed = True
                raise RuntimeError("a bug in the frame handler")
            super().__call__(frame, receive_ms)

    async with simulator(events_per_second=2000) as sim:
        feed = feed_for(sim.delayed_url, DL, ("AAPL",))
        record = Failing()
        async with running(feed, record):
            await eventually(streaming([feed], connects=2))
            await more_data(record)
    assert record.failed and feed.stats.disconnects == {"drop": 1}
    assert "delayed feed: unexpected error; reconnecting" in caplog.text
    assert "a bug in the frame handler" in caplog.text  # the traceback is logged


async def test_input_waiting_tells_a_reader_behind_from_one_caught_up() -> None:
    """The flush loop's question: while the handler holds the loop, frames pile up in the
    kernel (``input_waiting`` is true); once everything is read and the feed is silent, it
    is false."""
    seen: list[bool] = []

    class Stalling(Recorder):
        def __call__(self, frame: DecodedFrame, receive_ms: int) -> None:
            super().__call__(frame, receive_ms)
            if frame.events and not seen:
                time.sleep(0.05)  # the reader is held: the simulator keeps sending
                seen.append(feed.input_waiting())

    async with simulator(events_per_second=20_000, events_per_frame=10, max_events=3_000) as sim:
        feed = feed_for(sim.delayed_url, DL)
        assert not feed.input_waiting()  # not connected
        record = Stalling()
        async with running(feed, record):
            await eventually(lambda: record.total == 3_000)
            assert seen == [True]
            await asyncio.sleep(0.05)
            assert not feed.input_waiting()
