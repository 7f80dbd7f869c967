"""The realistic market's properties, on the pure model driven by given times and a seed."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict

import pytest

from polygon_core.subscriptions import FeedRole
from polygon_sim.live import AM_DELAY_MS, LiveHost
from polygon_sim.realistic import RealisticMarket, top_share, zipf_exponent
from polygon_sim.session import SESSIONS, SessionClock, intensity, session_at
from polygon_sim.tickers import DEFAULT_SYMBOLS
from polygon_sim.wire import Aggregate, FairValue, Quote, Trade

T0 = 1_700_000_000  # a wall-clock second; the clock below says it is midday then
SYMBOLS = tuple(f"S{i:03d}" for i in range(300))


def market(symbols=DEFAULT_SYMBOLS, session="midday", rate=2000.0, **kw) -> RealisticMarket:
    return RealisticMarket(
        symbols, rate=rate, clock=SessionClock(session, 1.0, float(T0)), seed=7, **kw
    )


def test_zipf_exponent_gives_the_top_percent_a_third() -> None:
    for n in (24, 300, 5000):
        assert top_share(n, zipf_exponent(n)) == pytest.approx(1 / 3, abs=0.005)
    assert zipf_exponent(2) == 0.0  # one of two symbols already holds half


def test_top_one_percent_carries_about_a_third_and_quotes_outnumber_trades() -> None:
    m = market(SYMBOLS, rate=6000.0)
    trades = [e for sec in range(T0, T0 + 20) for e in m.trades(sec)]
    quotes = [e for sec in range(T0, T0 + 20) for e in m.quotes(sec)]
    top = set(SYMBOLS[:3])  # 1 % of 300
    for events in (trades, quotes):
        share = sum(e.sym in top for e in events) / len(events)
        assert 0.28 < share < 0.39, share
    assert 3.0 < len(quotes) / len(trades) < 5.0
    rate = (len(trades) + len(quotes)) / 20
    assert 5400 < rate < 6600, rate  # midday: the configured rate


def test_a_second_is_the_same_whoever_asks() -> None:
    a, b = market(), market()
    assert a.trades(T0 + 5) == b.trades(T0 + 5)
    assert a.quotes(T0 + 5) == b.quotes(T0 + 5)
    assert a.trades(T0 + 5) != a.trades(T0 + 6)


def test_prices_move_about_a_basis_point_and_spreads_are_cents() -> None:
    m = market()
    trades = [e for sec in range(T0, T0 + 30) for e in m.trades(sec) if e.sym == "AAPL"]
    moves = [abs(b.p - a.p) / a.p for a, b in zip(trades, trades[1:], strict=False)]
    assert len(moves) > 1000
    assert statistics.median(moves) <= 2e-4  # ~1 bp: a tick or a bid/ask bounce
    assert max(moves) < 2e-3
    assert abs(trades[-1].p - trades[0].p) / trades[0].p < 0.005  # no 20 % in 30 s
    quotes = [e for e in m.quotes(T0) if e.sym in ("AAPL", "MSFT", "NVDA")]
    spreads = [round(q.ap - q.bp, 4) for q in quotes]
    assert all(0.01 <= s <= 0.12 for s in spreads), Counter(spreads)
    assert all(q.bs >= 1 and q.as_ >= 1 and isinstance(q.bs, int) for q in quotes)


def test_sizes_are_round_and_odd_lots_with_polygon_conditions() -> None:
    m = market()
    trades = [e for sec in range(T0, T0 + 10) for e in m.trades(sec)]
    odd = [t for t in trades if 0 < t.s < 100]
    rounds = [t for t in trades if t.s >= 100]
    assert all(t.s % 100 == 0 for t in rounds)
    assert 0.3 < len(odd) / len(trades) < 0.6
    assert all(t.c is not None and 37 in t.c for t in odd)
    assert all(t.c is None or 37 not in t.c for t in rounds)
    assert any(t.c is None for t in trades)  # c omitted on regular trades
    assert {c for t in trades for c in t.c or ()} <= {12, 14, 37, 41}
    assert all(12 not in (t.c or ()) for t in trades)  # midday: not extended hours
    off = [t for t in trades if t.x == 4]
    assert off and all(t.trfi == 202 and t.trft is not None for t in off)
    assert all(t.pt is not None and t.pt <= t.t for t in trades)
    pre = market(session="pre").trades(T0)
    assert pre and all(12 in (t.c or ()) for t in pre)


def test_one_am_per_symbol_minute_after_it_closes_consistent_with_its_trades() -> None:
    m = market()
    realtime = LiveHost(m, FeedRole.REALTIME, T0 * 1000 + 100)
    bars: list[tuple[int, Aggregate]] = []
    fmv: list[FairValue] = []
    for now in range(T0 * 1000 + 100, (T0 + 200) * 1000, 250):
        for event in realtime.take(now):
            assert event.t < now if isinstance(event, FairValue) else event.e < now
            if isinstance(event, Aggregate):
                bars.append((now, event))
            else:
                fmv.append(event)
    first_minute = (T0 // 60 + 1) * 60_000  # the first one the host saw whole
    minutes = sorted({b.s for _, b in bars})
    assert minutes == [first_minute, first_minute + 60_000]  # the third closes after T0+200
    per_minute = Counter((b.sym, b.s) for _, b in bars)
    assert set(per_minute.values()) == {1}
    for now, bar in bars:
        assert bar.e == bar.s + 60_000 and bar.s % 60_000 == 0
        assert bar.e + AM_DELAY_MS <= now < bar.e + AM_DELAY_MS + 500  # just after the close
    trades = defaultdict(list)
    for sec in range(first_minute // 1000, first_minute // 1000 + 120):
        for trade in m.trades(sec):
            trades[(trade.sym, trade.t - trade.t % 60_000)].append(trade)
    assert {(b.sym, b.s) for _, b in bars} == set(trades)
    for _, bar in bars:
        own = trades[(bar.sym, bar.s)]
        volume = sum(t.s for t in own)
        assert bar.v == volume and bar.z == volume // len(own)
        assert (bar.o, bar.c) == (own[0].p, own[-1].p)
        assert (bar.h, bar.l) == (max(t.p for t in own), min(t.p for t in own))
        vwap = sum(t.p * t.s for t in own) / volume
        assert bar.vw == pytest.approx(vwap, abs=1e-4)
        assert bar.l <= bar.vw <= bar.h
    # FMV: about once a second per symbol
    per_symbol = Counter(e.sym for e in fmv)
    assert set(per_symbol) == set(DEFAULT_SYMBOLS)
    assert all(195 <= n <= 200 for n in per_symbol.values()), per_symbol


def test_events_never_come_from_the_future_and_come_once() -> None:
    m = market(fmv_ns=True)
    delayed = LiveHost(m, FeedRole.DELAYED, T0 * 1000 + 500)
    realtime = LiveHost(m, FeedRole.REALTIME, T0 * 1000 + 500)
    seen: list[Trade | Quote] = []
    times = range(T0 * 1000 + 500, (T0 + 5) * 1000, 7)
    for now in times:
        for event in delayed.take(now):
            assert isinstance(event, Trade | Quote) and T0 * 1000 + 500 <= event.t < now
            seen.append(event)
        for event in realtime.take(now):
            assert isinstance(event, FairValue) and event.t < now * 1_000_000
    expected = [
        e for sec in range(T0, T0 + 5) for e in m.trades(sec) + m.quotes(sec)
        if T0 * 1000 + 500 <= e.t < times[-1]
    ]  # fmt: skip
    assert Counter(map(repr, seen)) == Counter(map(repr, expected))
    assert [e.t for e in seen] == sorted(e.t for e in seen)


def test_a_long_gap_skips_ahead_without_a_burst() -> None:
    m = market()
    delayed = LiveHost(m, FeedRole.DELAYED, T0 * 1000)
    delayed.take(T0 * 1000 + 100)
    later = (T0 + 3600) * 1000
    assert delayed.take(later) == []  # an hour unasked for is not sent in one go
    events = delayed.take(later + 1000)
    assert len(events) < 5000 and min(e.t for e in events) >= later


def test_session_phases_and_their_activity() -> None:
    h = 3600
    assert [session_at(x * h) for x in (2, 5, 9.75, 12, 15.75, 17, 22)] == [
        "overnight", "pre", "open", "midday", "close", "after", "overnight",
    ]  # fmt: skip
    assert intensity(9.5 * h) == 4.0 and intensity(12 * h) == 1.0
    assert intensity(3 * h) < intensity(5 * h) < intensity(12 * h) < intensity(15.9 * h)
    clock = SessionClock("close", 60.0, 0.0)  # a minute of market time per second
    assert clock.session(0) == "close" and clock.session(31) == "after"
    assert SessionClock("pre", 1.0, 0.0).day_s(10) == SESSIONS["pre"][0] + 10
    counts = {s: len(market(session=s).trades(T0)) for s in ("overnight", "pre", "open")}
    assert counts["overnight"] < counts["pre"] < counts["open"]
    with pytest.raises(ValueError):
        SessionClock("lunch")
