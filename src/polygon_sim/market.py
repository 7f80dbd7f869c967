"""The simulator's synthetic market: the wire events of one host.

Each host (real-time: ``AM``/``FMV``; delayed: ``T``/``Q``) owns a :class:`HostMarket` with
its own seeded random stream and per-symbol state, shared by every connection to that host,
so a reconnecting client sees the market carry on (prices, sequence numbers and timestamps
never restart) and one host's output does not depend on the other's timing. With a seed and
the synthetic clock, a host's events are a pure function of the seed and of the order of
subscriptions and frame sizes.

Events follow ``polygon-protocol.md`` §8: trades carry ``x``, ``i`` (a string), ``z``,
``p``, ``s``, ``t``, ``q`` and sometimes ``c`` (omitted when there are no conditions),
``pt`` (<= ``t``), ``trfi``/``trft`` (off-exchange prints, ``x`` 4) and ``ds``; quotes
carry ``bx``, ``ax``, ``bp``, ``ap``, ``bs``, ``as``, ``t``, ``q``, ``z`` and sometimes
``i``, ``c``, ``pt``; minute bars carry ``v``, ``av``, ``op``, ``vw``, ``o``, ``c``, ``h``,
``l``, ``a``, ``z``, ``s`` (minute-aligned) and ``e = s + 60000``; FMV carries ``fmv``,
``sym``, ``t``. Prices move on a cent grid and are JSON integers when whole (``"p":192``).
Event times are epoch ms, strictly increasing per symbol and host (``AM``'s ``s`` is
non-decreasing: a bar re-sent for the same minute is a correction).

Speed: one ``getrandbits`` call drives most choices of an event, events are msgspec Structs
and a frame is encoded in one call (about 1 µs per event).
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterable

from polygon_core.subscriptions import FeedRole
from polygon_sim.tickers import TickerInfo, ticker_info
from polygon_sim.wire import Aggregate, Event, FairValue, Quote, Trade

__all__ = ["DEFAULT_MIX", "HostMarket", "Pick"]

DEFAULT_MIX: tuple[tuple[str, float], ...] = (("T", 1.0), ("Q", 4.0), ("AM", 1.0), ("FMV", 2.0))
"""Relative weights of the channels on their host (quotes outnumber trades about 4:1)."""

_EXCHANGES = (1, 2, 3, 4, 7, 8, 10, 11, 12, 15, 17, 19, 21, 11, 12, 10)  # 16: index by 4 bits
_CONDITIONS = ([12], [37], [14, 41], [12, 37], [41], [0], [12, 22], [37, 41])
_SIZES = (100, 100, 100, 100, 200, 300, 500, 1000, 1, 5, 10, 25, 37, 50, 12, 2)
_INDICATORS = ([604], [1], [604, 8], [503])


def _price(cents: int) -> float | int:
    """Dollars from cents; a whole dollar amount stays an integer (``192``, not ``192.0``)."""
    return cents / 100 if cents % 100 else cents // 100


class _Symbol:
    """Per-symbol market state on one host."""

    __slots__ = (
        "symbol", "tape", "cents", "unit", "span", "last_t", "seq", "trade_id", "sent",
        "day_open", "day_volume", "day_pv", "bar_s", "bar_o", "bar_h", "bar_l", "bar_v",
        "bar_pv", "bar_n",
    )  # fmt: skip

    def __init__(self, info: TickerInfo) -> None:
        self.symbol = info.ticker
        self.tape = info.tape
        self.cents = info.price_cents
        self.unit = max(1, info.price_cents // 20000)  # a step is about 0.005 % of the price
        self.span = 2 * self.unit + 1
        self.last_t = 0
        self.seq = 1000 + zlib.crc32(info.ticker.encode()) % 100000
        self.trade_id = 52983525000000 + self.seq
        self.sent = 0
        """Bit ``1 << channel index`` is set once an event of that channel was built."""
        self.day_open = _price(info.price_cents)
        self.day_volume = self.bar_v = self.bar_n = self.bar_s = 0
        self.day_pv = self.bar_pv = 0
        self.bar_o = self.bar_h = self.bar_l = info.price_cents


Pick = tuple[int, int, _Symbol]
_POOL_MASK = 4095
_TradeDraw = tuple[int, int, int, list[int] | None, int | None, bool, str | None, int]
"""Price move (-1/0/+1 step), x, s, c, t - pt, off-exchange, ds, q increment."""
_QuoteDraw = tuple[int, int, int, int, int, int, int | None, list[int] | None, bool, int]
"""Price move, bx, ax, spread in steps, bs, as, c, i, has pt, q increment."""
"""(channel index on the host, its bit, symbol state): one weighted entry of a pick table."""


class HostMarket:
    """The events of one host's channels over ``symbols``; see the module docstring."""

    def __init__(
        self,
        role: FeedRole,
        symbols: Iterable[str],
        *,
        seed: int | None,
        start_ms: int | None,
        mix: dict[str, float],
        fmv_time_unit: str = "ms",
    ) -> None:
        self.role = role
        self.channels: tuple[str, ...] = tuple(c.value for c in role.channels)
        self.states = {s: _Symbol(ticker_info(s)) for s in dict.fromkeys(symbols)}
        self.synthetic = start_ms is not None
        self.clock_ms = start_ms or 0
        """The synthetic clock (1 ms per event); unused with the wall clock."""
        rng = random.Random(f"{seed}:{role.value}" if seed is not None else None)
        self._random = rng.random
        self._bits = rng.getrandbits
        self._fmv_ns = fmv_time_unit == "ns"
        self._k = 0
        """Position in the pools of precomputed random draws."""
        self._make_pools()
        smallest = min((w for w in mix.values() if w > 0), default=1.0)
        self._weights = [
            max(0, round(mix.get(channel, 0.0) / smallest)) for channel in self.channels
        ]

    def picks(self, wildcard: Iterable[str], explicit: Iterable[tuple[str, str]]) -> list[Pick]:
        """The weighted (channel, symbol) table of a subscription set; unknown symbols and
        other hosts' channels give nothing (acknowledged, never any data)."""
        wild, wanted = set(wildcard), set(explicit)
        table: list[Pick] = []
        for index, channel in enumerate(self.channels):
            for symbol, state in self.states.items():
                if channel in wild or (channel, symbol) in wanted:
                    table.extend([(index, 1 << index, state)] * self._weights[index])
        return table

    def fill(
        self, picks: list[Pick], n: int, now_ms: int, out: list[Event], counts: list[int]
    ) -> None:
        """Append ``n`` events drawn from ``picks`` to ``out`` and count them per channel
        index in ``counts``. ``now_ms`` is the wall clock (ignored by the synthetic one)."""
        clock = self.clock_ms if self.synthetic else now_ms
        if self.role is FeedRole.DELAYED:
            clock, second = self._fill_delayed(picks, n, clock, out)
        else:
            clock, second = self._fill_realtime(picks, n, clock, out)
        counts[0] += n - second
        counts[1] += second
        if self.synthetic:
            self.clock_ms = clock

    def _fill_delayed(
        self, picks: list[Pick], n: int, clock: int, out: list[Event]
    ) -> tuple[int, int]:
        # The hot loop: locals only; the random parts of each event come precomputed from
        # the pools (drawn from the seeded generator at start), the pick from the generator.
        rnd, size, append, k = self._random, len(picks), out.append, self._k
        step, quotes, trade_pool, quote_pool = int(self.synthetic), 0, self._trades, self._quotes
        for _ in range(n):
            index, bit, st = picks[int(rnd() * size)]
            last = st.last_t
            t = st.last_t = clock if clock > last else last + 1
            clock += step
            st.sent |= bit
            k = (k + 1) & _POOL_MASK
            if index:
                quotes += 1
                move, bx, ax, spread, bs, asks, cq, ind, pt, inc = quote_pool[k]
                unit = st.unit
                c = st.cents + move * unit
                st.cents = c = c if c > 0 else 1
                a = c + spread * unit
                st.seq = q = st.seq + inc
                append(
                    Quote(
                        st.symbol, bx, ax, c / 100 if c % 100 else c // 100,
                        a / 100 if a % 100 else a // 100, bs, asks, t, q, st.tape, cq, ind,
                        t if pt else None,
                    )
                )  # fmt: skip
            else:
                move, x, shares, cond, lag, off, ds, inc = trade_pool[k]
                c = st.cents + move * st.unit
                st.cents = c = c if c > 0 else 1
                st.seq = q = st.seq + inc
                st.trade_id = trade_id = st.trade_id + 1
                append(
                    Trade(
                        st.symbol, x, str(trade_id), st.tape, c / 100 if c % 100 else c // 100,
                        shares, t, q, cond, None if lag is None else t - lag,
                        202 if off else None, t - 1 if off else None, ds,
                    )
                )  # fmt: skip
        self._k = k
        return clock, quotes

    def _make_pools(self) -> None:
        """Precompute the random parts of trades and quotes (see ``_fill_delayed``)."""
        r, bits = self._random, self._bits
        self._draws: list[tuple[int, int, int, int, int]] = []
        """Real-time host: price move, AM volume, AM trade count, FMV offset, FMV ns part."""
        if self.role is FeedRole.REALTIME:
            for _ in range(_POOL_MASK + 1):
                volume, trades = 100 * (1 + bits(6)), 1 + bits(3)
                self._draws.append((bits(2) % 3 - 1, volume, trades, bits(7) - 64, bits(20)))
            return
        self._trades: list[_TradeDraw] = []
        self._quotes: list[_QuoteDraw] = []
        for _ in range(_POOL_MASK + 1):
            f = bits(10)
            off, odd = f > 716, f > 1013  # an off-exchange print; a fractional-share print
            shares = 0 if odd else _SIZES[bits(4)]
            ds = f"0.{bits(19) % 10**6:06d}" if odd else (f"{shares}.0" if f > 870 else None)
            self._trades.append(
                (
                    bits(2) % 3 - 1, 4 if off else _EXCHANGES[bits(4)], shares,
                    _CONDITIONS[bits(3)] if f < 410 else None,
                    bits(2) if f > 204 else None, off, ds, 1 + bits(3),
                )
            )  # fmt: skip
            g = bits(10)
            self._quotes.append(
                (
                    bits(2) % 3 - 1, _EXCHANGES[bits(4)], _EXCHANGES[bits(4)], 1 + bits(2),
                    1 + bits(5), 1 + bits(6), 0 if g < 30 else None,
                    _INDICATORS[g & 3] if g < 300 else None, g > 400, 1 + int(r() * 3),
                )
            )  # fmt: skip

    def _fill_realtime(
        self, picks: list[Pick], n: int, clock: int, out: list[Event]
    ) -> tuple[int, int]:
        rnd, size, append, k = self._random, len(picks), out.append, self._k
        step, values, ns, bar, pool = int(self.synthetic), 0, self._fmv_ns, self._bar, self._draws
        for _ in range(n):
            index, bit, st = picks[int(rnd() * size)]
            last = st.last_t
            t = st.last_t = clock if clock > last else last + 1
            clock += step
            st.sent |= bit
            k = (k + 1) & _POOL_MASK
            move, volume, trades, offset, nanos = pool[k]
            unit = st.unit
            c = st.cents + move * unit
            st.cents = c = c if c > 0 else 1
            if not index:
                append(bar(st, t, c, volume, trades))
                continue
            values += 1
            ticks = c * 100 + offset * unit
            fmv = ticks / 10_000 if ticks % 10_000 else ticks // 10_000
            append(FairValue(fmv, st.symbol, t * 1_000_000 + nanos if ns else t))
        self._k = k
        return clock, values

    @staticmethod
    def _bar(st: _Symbol, t: int, c: int, volume: int, trades: int) -> Aggregate:
        """The current minute's bar for ``st`` after one more (simulated) trade at ``c``."""
        start = t - t % 60_000
        if start > st.bar_s:
            st.bar_s, st.bar_o, st.bar_h, st.bar_l = start, c, c, c
            st.bar_v = st.bar_pv = st.bar_n = 0
        elif c > st.bar_h:
            st.bar_h = c
        elif c < st.bar_l:
            st.bar_l = c
        st.bar_v = v = st.bar_v + volume
        st.bar_n = count = st.bar_n + trades
        st.bar_pv = pv = st.bar_pv + volume * c
        st.day_volume = day_v = st.day_volume + volume
        st.day_pv = day_pv = st.day_pv + volume * c
        vw, avg = pv * 100 // v, day_pv * 100 // day_v  # in 1/10000 dollar
        o, h, lo = st.bar_o, st.bar_h, st.bar_l
        return Aggregate(
            st.symbol, v, day_v, st.day_open, vw / 10_000 if vw % 10_000 else vw // 10_000,
            o / 100 if o % 100 else o // 100, c / 100 if c % 100 else c // 100,
            h / 100 if h % 100 else h // 100, lo / 100 if lo % 100 else lo // 100,
            avg / 10_000 if avg % 10_000 else avg // 10_000, v // count, start, start + 60_000,
        )  # fmt: skip

    def stale(self, picks: list[Pick]) -> tuple[int, Event] | None:
        """An out-of-order event and its channel index: older than one already built for
        that channel and symbol (``t`` 1-60 s back; for ``AM`` the previous minute's bar).
        ``None`` if nothing was built yet. The market state is not changed."""
        ready = [p for p in picks if p[2].sent & p[1]]
        if not ready:
            return None
        index, _, st = ready[int(self._random() * len(ready))]
        older = st.last_t - 1000 - int(self._random() * 59_000)
        price, sym, tape = _price(st.cents), st.symbol, st.tape
        event: Event
        if self.role is FeedRole.DELAYED and index == 0:
            event = Trade(sym, 4, str(st.trade_id), tape, price, 100, older, st.seq, None, older)
        elif self.role is FeedRole.DELAYED:
            ask = _price(st.cents + st.unit)
            event = Quote(sym, 11, 12, price, ask, 1, 1, older, st.seq, tape)
        elif index == 0:
            start, lo, hi = st.bar_s - 60_000, _price(st.bar_l), _price(st.bar_h)
            vwap = round((st.bar_l + st.bar_h) / 200, 4)
            event = Aggregate(
                sym, max(1, st.bar_v // 2), st.day_volume, st.day_open, vwap, lo, hi, hi, lo,
                vwap, 100, start, start + 60_000,
            )  # fmt: skip
        else:
            event = FairValue(price, sym, older * 1_000_000 if self._fmv_ns else older)
        return index, event
