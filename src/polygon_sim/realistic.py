"""The realistic market model: what every symbol trades and quotes in each wall-clock second.

Pure and deterministic: the events of (symbol, second, channel) are a function of the
seed, so the real-time host (which needs the trades for its minute bars) and the delayed
host (which sends them) compute the same trades without sharing state, and any second can
be generated on its own (a reconnect or a quiet hour costs nothing).

- Activity is Zipf-like over the universe in its given order (the first symbol is the most
  active): the exponent is chosen so that the top 1 % of symbols (at least one) carry about
  a third of the trades and quotes. Quotes are :data:`QUOTES_PER_TRADE` times as frequent
  as trades. Counts per second are Poisson around ``rate`` x share x the session's
  intensity (:mod:`polygon_sim.session`).
- Prices: a slow deterministic path per symbol (a few sines, periods 90 s to 6 h, a day's
  range of about 1-2 %) plus mean-reverting noise of about one basis point per event, on
  the cent grid; trades print at the bid, the ask or (off-exchange) the midpoint, so a
  half-cent price like ``297.845`` can appear. Spreads are about 1 bp of the price on the
  most active names (a few cents) up to 10 bp on the least, at least a cent.
- Sizes: round lots (100-1,000, rarely a block) and odd lots (1-99 shares, condition 37);
  quote sizes in round lots (``bs: 3`` = 300 shares). Conditions as Polygon sends them:
  ``c`` omitted for a regular trade, 37 odd lot, 14 intermarket sweep, 41 trade-through
  exempt, 12 Form T (extended hours); off-exchange prints carry ``x`` 4, ``trfi`` 202 and
  ``trft``; a few carry ``ds`` (``"40.0"``, or a fractional ``"0.740474"`` with ``s`` 0).
- Times are epoch ms (``pt`` <= ``t``); FMV ``t`` in ms or ns (``fmv_ns``).
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Iterable

from polygon_sim.session import SessionClock
from polygon_sim.tickers import ticker_info
from polygon_sim.wire import FairValue, Quote, Trade

__all__ = ["QUOTES_PER_TRADE", "RealisticMarket", "dollars", "top_share", "zipf_exponent"]

QUOTES_PER_TRADE = 4.0
_MASK = (1 << 64) - 1
_PERIODS = (90.0, 600.0, 3600.0, 21600.0)
_AMPLITUDES = (0.0003, 0.0008, 0.002, 0.004)  # fractions of the price
_LIT = (12, 12, 12, 10, 10, 11, 11, 15, 17, 19, 21, 8, 7, 3, 2, 1)  # exchange ids
_ODD_LOTS = (1, 1, 2, 3, 5, 5, 10, 10, 15, 20, 25, 30, 40, 50, 60, 75, 80, 99)
_ROUND_LOTS = (100, 100, 100, 100, 100, 200, 200, 300, 400, 500, 500, 1000)
_QUOTE_LOTS = (1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 4, 4, 5, 5, 6, 7, 8, 10, 12, 15, 20)
"""Quote sizes in round lots (``bs: 3`` = 300 shares)."""
_T, _Q, _FMV = 0, 1, 2


def top_share(n: int, alpha: float) -> float:
    """Share of the top 1 % (at least one) of ``n`` Zipf(``alpha``) symbols."""
    weights = [1.0 / (rank**alpha) for rank in range(1, n + 1)]
    return float(sum(weights[: max(1, n // 100)]) / sum(weights))


def zipf_exponent(n: int, target: float = 1 / 3) -> float:
    """The exponent that gives the top 1 % of ``n`` symbols ``target`` of the activity
    (0 when even a flat market gives them more, as with two symbols)."""
    lo, hi = 0.0, 4.0
    if top_share(n, lo) >= target:
        return 0.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if top_share(n, mid) < target else (lo, mid)
    return (lo + hi) / 2


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def dollars(cents: float) -> float | int:
    """Dollars from (possibly half) cents: ``192`` whole, ``297.845`` for a midpoint."""
    value = round(cents / 100, 4)
    return int(value) if value == int(value) else value


class _Name:
    """Constants of one symbol."""

    __slots__ = ("symbol", "tape", "cents", "share", "spread", "tick", "phases", "key")

    def __init__(self, symbol: str, share: float, rank_fraction: float, seed: int) -> None:
        info = ticker_info(symbol)
        self.symbol, self.tape, self.cents, self.share = symbol, info.tape, info.price_cents, share
        self.spread = max(1, round(self.cents * (1 + 9 * rank_fraction) / 10_000))
        self.tick = max(1, round(self.cents / 10_000))  # about a basis point, at least a cent
        self.key = zlib.crc32(symbol.encode())
        rng = random.Random(seed ^ self.key)
        self.phases = tuple(rng.random() * 2 * math.pi for _ in _PERIODS)


class RealisticMarket:
    """The model; see the module docstring. ``rate``: trades plus quotes per second over
    the whole universe at midday intensity."""

    def __init__(
        self,
        symbols: Iterable[str],
        *,
        rate: float,
        clock: SessionClock,
        seed: int | None = None,
        fmv_ns: bool = False,
    ) -> None:
        names = tuple(dict.fromkeys(symbols))
        self.seed = seed if seed is not None else random.getrandbits(48)
        self.clock = clock
        self.fmv_ns = fmv_ns
        alpha = zipf_exponent(len(names))
        raw = [1.0 / (rank**alpha) for rank in range(1, len(names) + 1)]
        total = sum(raw) or 1.0
        self.names = [
            _Name(s, w / total, i / max(1, len(names) - 1), self.seed)
            for i, (s, w) in enumerate(zip(names, raw, strict=True))
        ]
        self.trade_rate = rate / (1 + QUOTES_PER_TRADE)
        self.quote_rate = rate - self.trade_rate

    def mid_cents(self, name: _Name, t_ms: int) -> float:
        """The slow price path of ``name`` at ``t_ms`` (cents, not on the grid)."""
        t = t_ms / 1000
        drift = sum(
            a * math.sin(2 * math.pi * t / p + phase)
            for a, p, phase in zip(_AMPLITUDES, _PERIODS, name.phases, strict=True)
        )
        return name.cents * (1 + drift)

    def _rng(self, sec: int, index: int, channel: int) -> random.Random:
        mixed = self.seed * 0x9E3779B97F4A7C15 + sec * 1_000_003 + index * 8 + channel
        return random.Random(mixed & _MASK)

    def _counts(self, sec: int, channel: int, rate: float) -> list[tuple[int, int]]:
        """(symbol index, event count) of the symbols with events in ``sec``."""
        level = rate * self.clock.intensity(sec)
        rng = self._rng(sec, len(self.names), channel)
        found = []
        for index, name in enumerate(self.names):
            n = _poisson(rng, level * name.share)
            if n:
                found.append((index, n))
        return found

    def _times(self, rng: random.Random, sec: int, n: int) -> list[int]:
        r = rng.random
        return sorted(sec * 1000 + int(r() * 1000) for _ in range(n))

    def _path(self, name: _Name, sec: int) -> tuple[float, float]:
        """The price path over ``sec`` as (cents at its start, cents per ms): the path is
        smooth, so a straight line within the second is close enough."""
        start = self.mid_cents(name, sec * 1000)
        return start, (self.mid_cents(name, sec * 1000 + 1000) - start) / 1000

    def trades(self, sec: int) -> list[Trade]:
        """Every symbol's trades in wall-clock second ``sec``, per symbol in time order."""
        extended = self.clock.session(sec) in ("pre", "after", "overnight")
        out: list[Trade] = []
        for index, n in self._counts(sec, _T, self.trade_rate):
            name, rng = self.names[index], self._rng(sec, index, _T)
            r, tick, (start, slope) = rng.random, name.tick, self._path(name, sec)
            noise, base_q, ms0 = 0.0, (sec & 0xFFFFFFF) << 20, sec * 1000
            for j, t in enumerate(self._times(rng, sec, n)):
                noise = 0.85 * noise + int(r() * 3) - 1
                mid = max(1, round((start + slope * (t - ms0)) / tick + noise) * tick)
                bid = mid - name.spread // 2
                side = r()
                off = r() < 0.35
                if off and side > 0.8:
                    cents: float = bid + name.spread / 2  # a midpoint print
                else:
                    cents = bid + name.spread if side < 0.5 else bid
                odd = r() < 0.45
                if odd:
                    size = _ODD_LOTS[int(r() * len(_ODD_LOTS))]
                elif r() < 0.01:
                    size = 100 * (20 + int(r() * 180))  # a block
                else:
                    size = _ROUND_LOTS[int(r() * len(_ROUND_LOTS))]
                conditions = []
                if r() < 0.08:
                    conditions += [14, 41] if r() < 0.3 else [14]
                if extended:
                    conditions.append(12)
                if odd:
                    conditions.append(37)
                ds = None
                if off and r() < 0.2:
                    ds = f"{size}.0"
                    if r() < 0.05:
                        size, ds = 0, f"0.{1 + int(r() * 999_999):06d}"
                q = base_q + 2 * j
                out.append(
                    Trade(
                        name.symbol, 4 if off else _LIT[int(r() * 16)], str(q >> 1), name.tape,
                        dollars(cents), size, t, q, sorted(conditions) or None,
                        t - int(r() * 3), 202 if off else None, t if off else None, ds,
                    )
                )  # fmt: skip
        return out

    def quotes(self, sec: int) -> list[Quote]:
        """Every symbol's NBBO quotes in ``sec``, per symbol in time order."""
        out: list[Quote] = []
        for index, n in self._counts(sec, _Q, self.quote_rate):
            name, rng = self.names[index], self._rng(sec, index, _Q)
            r, tick, (start, slope) = rng.random, name.tick, self._path(name, sec)
            noise, base_q, ms0, lots = 0.0, (sec & 0xFFFFFFF) << 20, sec * 1000, len(_QUOTE_LOTS)
            for j, t in enumerate(self._times(rng, sec, n)):
                noise = 0.85 * noise + int(r() * 3) - 1
                mid = max(1, round((start + slope * (t - ms0)) / tick + noise) * tick)
                spread = name.spread * (2 if r() < 0.1 else 1)
                bid = mid - spread // 2
                out.append(
                    Quote(
                        name.symbol, _LIT[int(r() * 16)], _LIT[int(r() * 16)], dollars(bid),
                        dollars(bid + spread), _QUOTE_LOTS[int(r() * lots)],
                        _QUOTE_LOTS[int(r() * lots)], t, base_q + 2 * j + 1, name.tape,
                        None, [604] if r() < 0.05 else None, t,
                    )
                )  # fmt: skip
        return out

    def fair_values(self, sec: int) -> list[FairValue]:
        """One FMV per symbol in ``sec`` (at a random ms of it)."""
        rng = self._rng(sec, len(self.names), _FMV)
        out: list[FairValue] = []
        for name in self.names:
            t = sec * 1000 + rng.randrange(1000)
            value = round(self.mid_cents(name, t) / 100, 4)
            stamp = t * 1_000_000 + rng.randrange(1_000_000) if self.fmv_ns else t
            out.append(FairValue(value, name.symbol, stamp))
        return out
