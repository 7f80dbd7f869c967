"""One host's view of the realistic market over the wall clock (:class:`LiveHost`).

``take(now_ms)`` returns the host's events that happened since the last call, in time
order, never one from the future (every event time is before ``now_ms``, so a consumer's
lag is >= 0, FMV in ns included). The delayed host sends the model's trades and quotes;
the real-time host sends one FMV per symbol per second and, just after each minute closes
(:data:`AM_DELAY_MS` after ``e``), one ``AM`` per symbol that traded in it, built from
exactly that minute's trades (``o``/``h``/``l``/``c``, ``v``, ``vw``, ``z``; ``av``, ``a``
and ``op`` since the host started). A minute the host did not see whole (the first one,
or one cut by a gap of more than :data:`MAX_GAP_MS` without a call) gets no bar. Pure:
driven by the times it is given.
"""

from __future__ import annotations

import time
from collections import deque

from polygon_core.subscriptions import FeedRole
from polygon_sim.config import REALISTIC_RATE, SimulatorConfig
from polygon_sim.realistic import RealisticMarket, dollars
from polygon_sim.session import SessionClock
from polygon_sim.wire import Aggregate, Event, Trade

__all__ = ["AM_DELAY_MS", "MAX_GAP_MS", "LiveHost", "realistic_hosts"]

AM_DELAY_MS = 300
MAX_GAP_MS = 5000


class _Bar:
    __slots__ = ("o", "h", "l", "c", "v", "pv", "n")

    def __init__(self, price: float) -> None:
        self.o = self.h = self.l = self.c = price
        self.v, self.pv, self.n = 0, 0.0, 0

    def add(self, price: float, size: int) -> None:
        self.h, self.l, self.c = max(self.h, price), min(self.l, price), price
        self.v += size
        self.pv += price * size
        self.n += 1


class LiveHost:
    """See the module docstring."""

    def __init__(self, market: RealisticMarket, role: FeedRole, now_ms: int) -> None:
        self.market = market
        self.role = role
        self.next_sec = now_ms // 1000
        """The first wall-clock second not generated yet."""
        self.emit_from = now_ms
        """Events before this time are generated (for the bars) but not sent."""
        self.bars_from = (now_ms // 60_000 + 1) * 60_000
        """The first minute whose bar this host saw whole."""
        self.pending: deque[tuple[int, Event]] = deque()
        self.bars: dict[str, _Bar] = {}
        self.day: dict[str, tuple[float | int, int, float]] = {}
        """Per symbol since the host started: (first price, volume, price x volume)."""

    def take(self, now_ms: int) -> list[Event]:
        """The events due before ``now_ms`` not taken yet, in time order."""
        if now_ms - self.next_sec * 1000 > MAX_GAP_MS:
            self._skip(now_ms)
        while self.next_sec * 1000 <= now_ms:
            self._generate(self.next_sec)
            self.next_sec += 1
        out: list[Event] = []
        pending, start = self.pending, self.emit_from
        while pending and pending[0][0] < now_ms:
            when, event = pending.popleft()
            if when >= start:
                out.append(event)
        return out

    def _skip(self, now_ms: int) -> None:
        """Nobody asked for a while: carry on from ``now_ms``, the bars from the next minute."""
        self.next_sec = now_ms // 1000
        self.emit_from = now_ms
        self.bars_from = (now_ms // 60_000 + 1) * 60_000
        self.bars.clear()
        self.pending.clear()

    def _generate(self, sec: int) -> None:
        market = self.market
        batch: list[tuple[int, Event]] = []
        if self.role is FeedRole.DELAYED:
            batch += [(e.t, e) for e in market.trades(sec)]
            batch += [(e.t, e) for e in market.quotes(sec)]
        else:
            self._add_trades(market.trades(sec))
            unit = 1_000_000 if market.fmv_ns else 1
            batch += [(e.t // unit, e) for e in market.fair_values(sec)]
            if sec % 60 == 59:
                minute = (sec - 59) * 1000
                batch += [(minute + 60_000 + AM_DELAY_MS, bar) for bar in self._close(minute)]
        batch.sort(key=lambda item: item[0])
        if self.pending and batch and batch[0][0] < self.pending[-1][0]:
            merged = sorted([*self.pending, *batch], key=lambda item: item[0])
            self.pending = deque(merged)
        else:
            self.pending.extend(batch)

    def _add_trades(self, trades: list[Trade]) -> None:
        bars, day = self.bars, self.day
        for trade in trades:
            price, size = trade.p, trade.s
            bar = bars.get(trade.sym)
            if bar is None:
                bar = bars[trade.sym] = _Bar(price)
            bar.add(price, size)
            first, volume, pv = day.get(trade.sym, (price, 0, 0.0))
            day[trade.sym] = (first, volume + size, pv + price * size)

    def _close(self, minute: int) -> list[Aggregate]:
        """The bars of the minute starting at ``minute`` (ms), and a fresh start."""
        bars, self.bars = self.bars, {}
        if minute < self.bars_from:
            return []
        out = []
        for symbol, bar in bars.items():
            if bar.v == 0:
                continue  # fractional prints only
            first, day_volume, day_pv = self.day[symbol]
            out.append(
                Aggregate(
                    symbol, bar.v, day_volume, first, dollars(100 * bar.pv / bar.v),
                    bar.o, bar.c, bar.h, bar.l, dollars(100 * day_pv / day_volume),
                    bar.v // bar.n, minute, minute + 60_000,
                )
            )  # fmt: skip
        return out


def realistic_hosts(config: SimulatorConfig) -> dict[FeedRole, LiveHost]:
    """Both hosts over one :class:`RealisticMarket` of ``config``, starting now."""
    market = RealisticMarket(
        config.symbols,
        rate=config.events_per_second or REALISTIC_RATE,
        clock=SessionClock.starting(config.session, config.session_speed),
        seed=config.seed,
        fmv_ns=config.fmv_time_unit == "ns",
    )
    now_ms = int(time.time() * 1000)
    return {role: LiveHost(market, role, now_ms) for role in FeedRole}
