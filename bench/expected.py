"""What Redis must hold after a seeded run: the final event of every key, by replay.

Each feed host runs in its own simulator process with its own ``--max-events``, seeded, on
the synthetic clock, and the sink subscribes every symbol in one subscribe frame. A host's
stream is then a pure function of (seed, host, symbols, channel mix, event count): the
driver rebuilds it here with the simulator's own market (:class:`HostMarket`, filled 50
events at a time as the writer does) and keeps the last event per (channel, symbol).
Latest-wins must leave exactly that in Redis: event times are strictly increasing per
symbol and host on the synthetic clock (``AM``'s bar start never goes back), so the last
delivered event of a key is its newest.

The replay is checked against the run itself: the sink's per-channel event counts must
equal the replay's (a mismatch means the replay and the simulator disagree, and the run is
reported as failed rather than trusted).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from polygon_core.subscriptions import FeedRole
from polygon_sim.config import DEFAULT_START_MS
from polygon_sim.market import DEFAULT_MIX, HostMarket
from polygon_sim.tickers import DEFAULT_SYMBOLS
from polygon_sim.wire import Aggregate, Event, FairValue, Quote, Trade

__all__ = [
    "FIELDS",
    "KEY_PREFIX",
    "Expected",
    "bench_symbols",
    "check_record",
    "replay",
    "wire_record_values",
]

KEY_PREFIX = {"AM": "stock:agg1m:", "FMV": "stock:fmv:", "T": "stock:trade:", "Q": "stock:quote:"}
FIELDS: dict[str, tuple[str, ...]] = {
    "AM": ("symbol", "start", "end", "open", "high", "low", "close", "volume", "vwap"),
    "FMV": ("symbol", "price", "ts"),
    "T": ("symbol", "price", "ts", "size", "conditions"),
    "Q": ("symbol", "bid", "bidSize", "ask", "askSize", "ts"),
}
"""The record fields of each channel (SPEC §2), in order; ``updatedAt`` follows them."""


def bench_symbols(n: int) -> tuple[str, ...]:
    """``n`` symbols: the simulator's realistic defaults (dots, preferreds, ``T``...) first,
    then made-up four-letter-plus tickers (``BAAA``, ``BAAB``, ...)."""
    out = list(DEFAULT_SYMBOLS[:n])
    seen, i = set(out), 0
    while len(out) < n:
        letters, rest = "", i
        for _ in range(3):
            rest, digit = divmod(rest, 26)
            letters = chr(65 + digit) + letters
        while rest:
            rest, digit = divmod(rest - 1, 26)
            letters = chr(65 + digit) + letters
        i += 1
        name = "B" + letters
        if name not in seen:
            seen.add(name)
            out.append(name)
    return tuple(out)


def wire_record_values(channel: str, wire: dict[str, Any]) -> list[Any]:
    """The record values (without ``updatedAt``) SPEC §2 gives a wire event (parsed JSON)."""
    if channel == "AM":
        return [wire[k] for k in ("sym", "s", "e", "o", "h", "l", "c", "v", "vw")]
    if channel == "FMV":
        return [wire["sym"], wire["fmv"], wire["t"]]
    if channel == "T":
        return [wire["sym"], wire["p"], wire["t"], wire["s"], wire.get("c", [])]
    return [wire[k] for k in ("sym", "bp", "bs", "ap", "as", "t")]


def record_values(event: Event) -> list[Any]:
    """The record values (without ``updatedAt``) the sink must write for ``event``."""
    if isinstance(event, Aggregate):
        return [event.sym, event.s, event.e, event.o, event.h, event.l, event.c, event.v, event.vw]
    if isinstance(event, FairValue):
        return [event.sym, event.fmv, event.t]
    if isinstance(event, Trade):
        return [event.sym, event.p, event.t, event.s, event.c or []]
    assert isinstance(event, Quote)
    return [event.sym, event.bp, event.bs, event.ap, event.as_, event.t]


@dataclass
class Expected:
    """The outcome of one seeded run: final record values per key, counts, sentinels."""

    finals: dict[str, tuple[str, list[Any]]] = field(default_factory=dict)
    """key -> (channel, record values without ``updatedAt``)."""
    counts: dict[str, int] = field(default_factory=dict)
    sentinels: list[str] = field(default_factory=list)
    """Keys whose final event is in the last frame of a host: written by the last flush."""
    last_keys: list[str] = field(default_factory=list)
    """The key of each host's very last event (polled first: a cheap 2-key MGET)."""

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def needle(self, key: str) -> bytes:
        """Bytes the final record of ``key`` contains (a cheap filter before parsing): the
        digits of its event time (``end`` for a bar)."""
        channel, values = self.finals[key]
        return b"%d" % values[FIELDS[channel].index("end" if channel == "AM" else "ts")]


_CHANNEL = {Aggregate: "AM", FairValue: "FMV", Trade: "T", Quote: "Q"}


def replay(
    symbols: Sequence[str], seed: int, per_host: dict[str, int], events_per_frame: int = 50
) -> Expected:
    """Rebuild what each host delivers for ``per_host`` events (``{"realtime": n, ...}``)."""
    expected = Expected()
    for role_name, total in per_host.items():
        role = FeedRole(role_name)
        market = HostMarket(
            role, symbols, seed=seed, start_ms=DEFAULT_START_MS, mix=dict(DEFAULT_MIX)
        )
        picks = market.picks(market.channels, ())
        counts = [0] * len(market.channels)
        last: dict[tuple[str, str], Event] = {}
        frame: list[Event] = []
        left = total
        while left > 0:
            frame = []
            n = min(events_per_frame, left)
            market.fill(picks, n, 0, frame, counts)
            left -= n
            for event in frame:
                last[(_CHANNEL[type(event)], event.sym)] = event
        for (channel, symbol), event in last.items():
            expected.finals[KEY_PREFIX[channel] + symbol] = (channel, record_values(event))
        for channel, count in zip(market.channels, counts, strict=True):
            expected.counts[channel] = count
        expected.sentinels += list(
            dict.fromkeys(KEY_PREFIX[_CHANNEL[type(e)]] + e.sym for e in frame)
        )
        if frame:
            expected.last_keys.append(KEY_PREFIX[_CHANNEL[type(frame[-1])]] + frame[-1].sym)
    return expected


def check_record(raw: bytes | None, channel: str, values: list[Any] | None) -> str | None:
    """``None`` when ``raw`` is a well-formed record of ``channel`` (equal to ``values`` when
    given), else what is wrong."""
    if raw is None:
        return "missing"
    try:
        record = json.loads(raw)
    except ValueError:
        return "not JSON"
    if not isinstance(record, dict):
        return "not an object"
    names = (*FIELDS[channel], "updatedAt")
    if tuple(record) != names:
        return f"fields {list(record)} != {list(names)}"
    updated = record["updatedAt"]
    if not (isinstance(updated, str) and updated.endswith("Z") and len(updated) == 24):
        return f"updatedAt {updated!r}"
    if values is not None and list(record.values())[:-1] != values:
        return f"holds {list(record.values())[:-1]}, expected {values}"
    return None
