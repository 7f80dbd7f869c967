"""The workloads of issue 7, and the sizes of a full and a ``--quick`` run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["FULL", "LATENCY_SYMBOLS", "QUICK", "Sizes", "Workload", "workloads"]

LATENCY_SYMBOLS = 500

Client = Literal["sink", "comparator", "null"]


@dataclass(frozen=True, slots=True)
class Workload:
    key: str
    """``1``, ``2``, ``3a``, ``3b``, ``4``, ``5``, ``cmp`` (comparator), ``feed`` (ceiling)."""
    title: str
    client: Client
    symbols: int
    events: int
    """Events of one run, both hosts together (half each)."""
    rate: float = 0.0
    """Events/s, both hosts together; 0: as fast as the client reads (seeded, verified)."""
    backend: Literal["redis", "upstash"] = "redis"
    s3: bool = False

    @property
    def paced(self) -> bool:
        return self.rate > 0


@dataclass(frozen=True, slots=True)
class Sizes:
    events: int
    symbols: int
    wide_symbols: int
    comparator_events: int
    latency_s: float
    repeat: int


FULL = Sizes(
    events=1_000_000,
    symbols=500,
    wide_symbols=10_000,
    comparator_events=100_000,
    latency_s=10.0,
    repeat=3,
)
QUICK = Sizes(
    events=20_000,
    symbols=50,
    wide_symbols=1_000,
    comparator_events=5_000,
    latency_s=2.0,
    repeat=1,
)


def workloads(sizes: Sizes) -> list[Workload]:
    """Every workload, in the order they run (the ceiling and the comparator first)."""
    n, s = sizes.events, sizes.symbols
    # Latency always uses 500 symbols, also with --quick: the simulator's wall-clock event
    # time is max(now, previous + 1) per symbol, so more than ~1000 events/s per symbol and
    # host would run the times ahead of the clock.
    lat, t = LATENCY_SYMBOLS, sizes.latency_s
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
        Workload("3a", f"3 latency, {lat} sym @ 20k ev/s", "sink", lat, int(20_000 * t), 20_000),
        Workload("3b", f"3 latency, {lat} sym @ 200k ev/s", "sink", lat, int(200_000 * t), 200_000),
        Workload("4", f"4 = 1 + S3 archive (moto), {s} sym", "sink", s, n, s3=True),
        Workload("5", f"5 = 1 on Upstash REST (local), {s} sym", "sink", s, n, backend="upstash"),
    ]
