"""Reference data of the simulator's tickers: names, listing exchange, type, start price.

The REST endpoint lists it (:mod:`polygon_sim.rest`) and the synthetic market starts
each symbol at its price (:mod:`polygon_sim.market`). Unknown symbols get stable
made-up data derived from a CRC of the name.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["DEFAULT_SYMBOLS", "TickerInfo", "reference_tickers", "ticker_info"]

DEFAULT_SYMBOLS: tuple[str, ...] = (
    "AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "BRK.B", "BRK.A", "JPM", "V",
    "SPY", "QQQ", "AMD", "NFLX", "BAC", "XOM", "F", "T", "A", "AMpB", "BACpB", "PLTR", "INTC",
)  # fmt: skip
"""A realistic default universe, edge cases included: dots (``BRK.B``), lowercase preferreds
(``AMpB``), one-letter tickers equal to a channel name (``T``, ``A``), a five-digit price."""


# symbol -> (name, primary exchange MIC, type, starting price in cents)
_KNOWN: dict[str, tuple[str, str, str, int]] = {
    "AAPL": ("Apple Inc.", "XNAS", "CS", 19200),
    "MSFT": ("Microsoft Corp", "XNAS", "CS", 43512),
    "NVDA": ("Nvidia Corp", "XNAS", "CS", 11725),
    "AMZN": ("Amazon.Com Inc", "XNAS", "CS", 18806),
    "GOOGL": ("Alphabet Inc. Class A Common Stock", "XNAS", "CS", 15421),
    "META": ("Meta Platforms, Inc. Class A Common Stock", "XNAS", "CS", 59800),
    "TSLA": ("Tesla, Inc. Common Stock", "XNAS", "CS", 27610),
    "BRK.B": ("Berkshire Hathaway Inc. Class B", "XNYS", "CS", 51234),
    "BRK.A": ("Berkshire Hathaway Inc. Class A", "XNYS", "CS", 76800000),
    "JPM": ("JPMorgan Chase & Co.", "XNYS", "CS", 24850),
    "V": ("Visa Inc.", "XNYS", "CS", 34500),
    "SPY": ("SPDR S&P 500 ETF Trust", "ARCX", "ETF", 56512),
    "QQQ": ("Invesco QQQ Trust, Series 1", "XNAS", "ETF", 48020),
    "AMD": ("Advanced Micro Devices", "XNAS", "CS", 9815),
    "NFLX": ("Netflix Inc", "XNAS", "CS", 113000),
    "BAC": ("Bank of America Corporation", "XNYS", "CS", 3912),
    "XOM": ("Exxon Mobil Corporation", "XNYS", "CS", 10655),
    "F": ("Ford Motor Company", "XNYS", "CS", 1000),
    "T": ("AT&T Inc.", "XNYS", "CS", 2745),
    "A": ("Agilent Technologies Inc.", "XNYS", "CS", 11300),
    "AMpB": ("Ares Management Corporation 7.00% Series B Preferred", "XNYS", "PFD", 5400),
    "BACpB": ("Bank of America Corporation Depositary Shares Series B", "XNYS", "PFD", 2480),
    "PLTR": ("Palantir Technologies Inc.", "XNAS", "CS", 12400),
    "INTC": ("Intel Corporation", "XNAS", "CS", 2000),
}
_DELISTED = ("TWTR", "FRC", "SIVB")  # listed only with active=false
_TAPE = {"XNYS": 1, "ARCX": 2, "XASE": 2, "XNAS": 3}


@dataclass(frozen=True, slots=True)
class TickerInfo:
    """Reference data of one ticker, as the tickers REST endpoint lists it."""

    ticker: str
    name: str
    primary_exchange: str
    type: str
    price_cents: int
    active: bool = True

    @property
    def tape(self) -> int:
        return _TAPE.get(self.primary_exchange, 3)


def ticker_info(symbol: str, *, active: bool = True) -> TickerInfo:
    """Known reference data for ``symbol``, or stable made-up data (from a CRC of the name)."""
    known = _KNOWN.get(symbol)
    if known is not None:
        return TickerInfo(symbol, *known, active=active)
    crc = zlib.crc32(symbol.encode())
    mic = ("XNAS", "XNYS", "ARCX")[crc % 3]
    return TickerInfo(
        symbol, f"{symbol} Synthetic Holdings Inc.", mic, "CS", 500 + crc % 40000, active
    )


def _extra_name(index: int) -> str:
    letters = ""
    for _ in range(3):
        index, rest = divmod(index, 26)
        letters = chr(65 + rest) + letters
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return "Z" + letters


def reference_tickers(symbols: Iterable[str], extra: int = 0) -> list[TickerInfo]:
    """The REST universe sorted by ticker: ``symbols``, ``extra`` made-up ones
    (``ZAAA``, ``ZAAB``, ...) and a few delisted tickers (inactive)."""
    names = dict.fromkeys(symbols)
    infos = [ticker_info(s) for s in names]
    infos += [ticker_info(n) for i in range(extra) if (n := _extra_name(i)) not in names]
    infos += [ticker_info(s, active=False) for s in _DELISTED if s not in names]
    return sorted(infos, key=lambda info: info.ticker)
