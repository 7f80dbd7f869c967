"""``python -m bench.archive_cpu [--frames N] [--mode off|null|both]``: the archive's CPU in
process.

Recorded-style frames (the simulator's market: 500 symbols, 50 events per frame, both
hosts interleaved) go through ``FrameDecoder.decode`` and ``Ingest.on_frame`` with the
archive off, or on with a no-op archive (so only the line building is measured: the
``keep_raw`` split, the stamp, ``archive_blocks``, one ``append`` call per channel per
frame). Prints CPU (``time.process_time``) per event and the ratio. On a shared machine
the instruction count is steadier: run one mode at a time under callgrind and compare::

    valgrind --tool=callgrind python -m bench.archive_cpu --mode off --frames 1000
    valgrind --tool=callgrind python -m bench.archive_cpu --mode null --frames 1000
    valgrind --tool=callgrind python -m bench.archive_cpu --mode setup --frames 1000

(``setup`` builds the frames and warms up without the measured loop; subtract it.)
"""

from __future__ import annotations

import argparse
import gc
import time

from bench.expected import bench_symbols
from polygon_core.codec import FrameDecoder
from polygon_core.events import Channel
from polygon_core.ingest import Ingest
from polygon_core.subscriptions import FeedRole
from polygon_sim.market import DEFAULT_MIX, HostMarket
from polygon_sim.wire import Event, encode

START_MS = 1_780_000_000_000


def frames(count: int, per_frame: int = 50, symbols: int = 500, seed: int = 7) -> list[bytes]:
    """``count`` frames, the two hosts' alternating."""
    hosts = []
    for role in FeedRole:
        market = HostMarket(
            role, bench_symbols(symbols), seed=seed, start_ms=START_MS, mix=dict(DEFAULT_MIX)
        )
        picks = market.picks([c.value for c in role.channels], [])
        host = []
        for _ in range(count // 2):
            events: list[Event] = []
            market.fill(picks, per_frame, 0, events, [0, 0])
            host.append(encode(events))
        hosts.append(host)
    return [frame for pair in zip(*hosts, strict=True) for frame in pair]


class _NoArchive:
    def append(self, channel: Channel, lines: bytes, ingest_ms: int, count: int = 1) -> None:
        pass


class _Clock:
    def monotonic_s(self) -> float:
        return time.monotonic()

    def time_ms(self) -> int:
        return START_MS


class _Scheduler:
    def poke(self) -> None:
        pass


def run(data: list[bytes], archive: _NoArchive | None, measure: bool = True) -> float:
    """CPU seconds of decode + on_frame over ``data`` (after a warm-up)."""
    decoder = FrameDecoder()
    ingest = Ingest(store=None, clock=_Clock(), scheduler=_Scheduler(), archive=archive)  # type: ignore[arg-type]
    keep = ingest.keep_raw
    for frame in data[:200]:
        ingest.on_frame(decoder.decode(frame, keep_raw=keep), START_MS)
    ingest.buffer.drain()
    gc.collect()
    if not measure:
        return 0.0
    started = time.process_time()
    for i, frame in enumerate(data):
        ingest.on_frame(decoder.decode(frame, keep_raw=keep), START_MS + (i >> 4))
        if i & 1023 == 0:
            ingest.buffer.drain()
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=4000)
    parser.add_argument("--mode", choices=["off", "null", "both", "setup"], default="both")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    data = frames(args.frames)
    events = sum(frame.count(b'"ev"') for frame in data)
    if args.mode == "setup":
        run(data, None, measure=False)
        return
    if args.mode != "both":
        run(data, None if args.mode == "off" else _NoArchive())
        return
    off = min(run(data, None) for _ in range(args.repeat))
    on = min(run(data, _NoArchive()) for _ in range(args.repeat))
    print(
        f"{events} events: archive off {off / events * 1e6:.3f} µs/event, "
        f"no-op archive {on / events * 1e6:.3f} µs/event, ratio {on / off:.2f}"
    )


if __name__ == "__main__":
    main()
