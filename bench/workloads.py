"""The workloads of issue 7, and the sizes of a full and a ``--quick`` run."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from polygon_sim.session import SESSIONS, intensity

__all__ = [
    "DAY_LEAD_S",
    "FULL",
    "LATENCY_RATES",
    "LATENCY_SYMBOLS",
    "QUICK",
    "Sizes",
    "Workload",
    "workloads",
]

LATENCY_SYMBOLS = 500
LATENCY_RATES = {"3a": (5_000, 10), "3b": (20_000, 10), "3c": (200_000, 50)}
"""Workload 3's rates (events/s, both hosts together) and events per frame, by key. At
200,000 events/s, frames of 10 would take the two simulators alone ~1.6 of the machine's
two cores (a send per 10 events); frames of 50 (what a busy feed packs, each sent at most
1 ms after its oldest event fell due) leave the machine to the writer under test."""

DAY_LEAD_S = 8.0
"""The realistic day: the open is this many seconds after the driver starts the simulators,
so that they and the client under test are up and subscribed by then on a loaded machine
(the seconds before fall in the quiet pre-market and are left out of the figures). A
client that writes first after the open fails the run: it missed part of the burst, and
its budget would drag the run into the after-hours trickle."""
DAY_SHARE = 0.93
"""The realistic day's budgets: this share of what the compressed open-to-close carries,
so that every run ends inside the close (its busiest minutes), never in the after-hours
trickle, whatever the Poisson counts and the start-up took."""

Client = Literal["sink", "comparator", "null", "reference"]


@dataclass(frozen=True, slots=True)
class Workload:
    key: str
    """``1``, ``2``, ``3a``-``3c``, ``4``, ``5``, ``cmp`` (comparator), ``feed`` (ceiling);
    ``ref-3a``... the reference writer at the rate of ``3a``..."""
    title: str
    client: Client
    symbols: int
    events: int
    """Events of one run, both hosts together (half each)."""
    rate: float = 0.0
    """Events/s, both hosts together; 0: as fast as the client reads (seeded, verified)."""
    backend: Literal["redis", "upstash"] = "redis"
    s3: bool = False
    events_per_frame: int = 50
    sink_src: str | None = None
    """Run the sink from this source folder instead of the working tree (``--baseline``)."""
    market: Literal["flat", "realistic"] = "flat"
    """``realistic``: both simulators on the realistic market (``rate``: its trades + quotes
    per second at midday), seeded alike, starting ``session`` at the same wall-clock moment
    (:data:`DAY_LEAD_S` after they are started) and running ``speed`` times the wall clock."""
    session: str = "open"
    speed: float = 1.0
    realtime_events: int | None = None
    """The real-time host's budget (``AM`` + ``FMV``); the delayed host (``T`` + ``Q``)
    sends the rest of ``events``. ``None``: half each."""

    @property
    def number(self) -> str:
        """The workload number of issue 7 (``3`` for ``3b``, ``ref-3b`` and ``base-3b``;
        ``day`` for the realistic day)."""
        return self.key.removeprefix("ref-").removeprefix("base-").rstrip("abc")

    @property
    def paced(self) -> bool:
        return self.rate > 0

    @property
    def per_host(self) -> dict[str, int]:
        """Events each host's simulator delivers (``--max-events``)."""
        realtime = self.events // 2 if self.realtime_events is None else self.realtime_events
        return {"realtime": realtime, "delayed": self.events - realtime}


@dataclass(frozen=True, slots=True)
class Sizes:
    events: int
    symbols: int
    wide_symbols: int
    comparator_events: int
    latency_s: float
    repeat: int
    day_s: float
    """The realistic day: wall-clock seconds from the open to the end of the close."""
    day_rate: float
    """The realistic day: trades + quotes per second at midday (the open starts at 4x)."""


FULL = Sizes(
    events=1_000_000,
    symbols=500,
    wide_symbols=10_000,
    comparator_events=100_000,
    latency_s=10.0,
    repeat=3,
    day_s=20.0,
    day_rate=10_000.0,
)
QUICK = Sizes(
    events=200_000,  # a few tenths of a second: the window from the first write must hold work
    symbols=50,
    wide_symbols=1_000,
    comparator_events=20_000,
    latency_s=2.0,
    repeat=1,
    day_s=5.0,
    day_rate=5_000.0,
)


def workloads(sizes: Sizes) -> list[Workload]:
    """Every workload, in the order they run (the ceiling and the comparator first)."""
    n, s = sizes.events, sizes.symbols
    # Latency always uses 500 symbols, also with --quick: the simulator's wall-clock event
    # time is max(now, previous + 1) per symbol, so more than ~1000 events/s per symbol and
    # host would run the times ahead of the clock. Each rate runs the reference writer
    # first, then the sink, so that every latency has its floor from the same minutes.
    lat, t = LATENCY_SYMBOLS, sizes.latency_s
    latency: list[Workload] = []
    for key, (rate, epf) in LATENCY_RATES.items():
        label = f"{lat} sym @ {rate // 1000}k ev/s, {epf}/frame"
        paced = int(rate * t)  # not ``n``: the throughput rows below need sizes.events
        latency += [
            Workload(f"ref-{key}", f"reference writer, {label}", "reference", lat, paced, rate,
                     events_per_frame=epf),
            Workload(key, f"3 latency, {label}", "sink", lat, paced, rate,
                     events_per_frame=epf),
        ]  # fmt: skip
    return [
        Workload("feed", f"feed ceiling: simulator -> null client, {s} sym", "null", s, n),
        Workload(
            "cmp",
            f"comparator (json + SET EX each), {s} sym",
            "comparator",
            s,
            sizes.comparator_events,
        ),
        Workload("1", f"1 throughput, {s} sym", "sink", s, n),
        Workload("2", f"2 throughput, {sizes.wide_symbols:,} sym", "sink", sizes.wide_symbols, n),
        *latency,
        Workload("4", f"4 = 1 + S3 archive (moto), {s} sym", "sink", s, n, s3=True),
        Workload("5", f"5 = 1 on Upstash REST (local), {s} sym", "sink", s, n, backend="upstash"),
        *day_workloads(sizes),
    ]


def day_workloads(sizes: Sizes) -> list[Workload]:
    """The realistic day: the reference writer, then the sink, each on a trading day from
    the open to the close compressed into ``sizes.day_s`` wall-clock seconds, 500 symbols.

    Activity follows the session clock: 4x midday's rate at the open decaying to 1.5x, then
    midday, then the close climbing from 1.5x to 3x. The delayed host's budget is
    :data:`DAY_SHARE` of the day's trades and quotes, the real-time host's the same share
    of one ``FMV`` per symbol and second; ``AM`` bars close on the wall clock's minutes, so
    a row shorter than a minute carries none.
    """
    open_s, close_s = SESSIONS["open"][0], SESSIONS["close"][1]
    speed = (close_s - open_s) / sizes.day_s
    day_volume = sum(intensity(open_s + i + 0.5) for i in range(close_s - open_s)) / speed
    delayed = int(DAY_SHARE * sizes.day_rate * day_volume)
    realtime = int(DAY_SHARE * LATENCY_SYMBOLS * sizes.day_s)
    label = f"{LATENCY_SYMBOLS} sym, open→close {sizes.day_s:g} s"
    day = Workload(
        "day", f"realistic day, {label}", "sink", LATENCY_SYMBOLS, realtime + delayed,
        sizes.day_rate, market="realistic", session="open", speed=speed,
        realtime_events=realtime,
    )  # fmt: skip
    title = f"reference writer, day, {label}"
    return [replace(day, key="ref-day", title=title, client="reference"), day]
