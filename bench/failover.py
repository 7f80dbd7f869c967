"""``python -m bench.failover``: how long the service's writes stop on a managed-Redis failover.

The real service (``python -m polygon_runner run``) streams from the simulator into a
primary on 127.0.0.2 reached through a name in /etc/hosts (see :mod:`bench.redis_failover`);
every ``--every`` seconds the pair fails over (alternately the managed procedure and the
bare one) and the name moves. The figure is the time from the hosts file being rewritten to
the first ``SET`` the new primary executes (``INFO commandstats``, polled every 2 ms), per
failover (that every key ends fresh, nothing rolled back, is asserted by the tests:
tests/runner/test_redis_failover_e2e.py). Needs root (the hosts file) and redis-server.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

from bench.procs import start_child
from bench.redis_failover import MovingName, RedisFailoverPair
from polygon_sim.config import SimulatorConfig
from polygon_sim.server import PolygonSimulator
from polygon_testing.local_redis import free_port


async def measure(rounds: int, every_s: float, rate: float, symbols: int) -> list[float]:
    names = tuple(f"S{i}" for i in range(symbols))
    config = SimulatorConfig(symbols=names, events_per_second=rate, track_latest=True)
    gaps: list[float] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        MovingName() as name,
        RedisFailoverPair() as pair,
    ):
        name.point(pair.primary.host)
        async with PolygonSimulator(config) as sim:
            env = {
                "POLYGON_API_KEY": config.api_key,
                "POLYGON_WS_SYMBOLS": ",".join(names),
                "POLYGON_DISCOVER_TICKERS": "false",
                "POLYGON_WS_HOST_REALTIME": sim.realtime_url,
                "POLYGON_WS_HOST_DELAYED": sim.delayed_url,
                "REDIS_URL": f"redis://{name.name}:{pair.port}/0",
                "HEALTH_PORT": str(free_port()),
                "LOG_FORMAT": "json",
            }
            argv = [sys.executable, "-m", "polygon_runner", "run"]
            service = start_child("service", argv, Path(tmp), env)
            try:
                while pair.set_calls(pair.primary) == 0:  # noqa: ASYNC110 - until it writes
                    await asyncio.sleep(0.05)
                await asyncio.sleep(every_s)
                for i in range(rounds):
                    await asyncio.to_thread(pair.wait_in_sync)
                    await asyncio.to_thread(pair.failover, name, coordinated=i % 2 == 0)
                    gaps.append(await asyncio.to_thread(pair.wait_first_write, 30.0))
                    print(f"failover {i + 1}: first write after {gaps[-1] * 1000:.0f} ms")
                    await asyncio.sleep(every_s)
            finally:
                service.stop()
    return gaps


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--every", type=float, default=2.0, help="seconds between failovers")
    p.add_argument("--rate", type=float, default=1000.0, help="events/s per connection")
    p.add_argument("--symbols", type=int, default=50)
    args = p.parse_args()
    gaps = asyncio.run(measure(args.rounds, args.every, args.rate, args.symbols))
    ms = sorted(g * 1000 for g in gaps)
    print(
        f"{len(ms)} failovers: first write after the name moved: min {ms[0]:.0f} ms, "
        f"median {statistics.median(ms):.0f} ms, max {ms[-1]:.0f} ms"
    )


if __name__ == "__main__":
    main()
