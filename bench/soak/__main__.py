"""``python -m bench.soak``: run the real service for a while under a seeded chaos schedule
and check that nothing is lost, rolled back or leaked. Exit code 1 on any breach.

The service (``python -m polygon_runner run``) runs as a child process against the local
simulator (in this process: it is the ground truth), a private ``redis-server`` and moto's
S3 server behind a proxy that can take S3 away. See docs/reliability.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from bench.redis_failover import hosts_file_writable
from bench.soak.plan import SoakConfig, schedule
from bench.soak.run import remove_workdir, run_soak
from bench.soak.verdict import judge, render


def _parser() -> argparse.ArgumentParser:
    d = SoakConfig()
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=d.duration_s, help="chaos window, s (600)")
    p.add_argument(
        "--rate",
        type=float,
        default=d.rate,
        help="flat: events/s, both hosts (50000); realistic: trades + quotes/s at midday (12000)",
    )
    p.add_argument("--symbols", type=int, default=d.symbols, help="symbols (2000)")
    p.add_argument(
        "--market",
        choices=["flat", "realistic"],
        default=d.market,
        help="simulator market (realistic; flat: a steady full-throttle rate)",
    )
    p.add_argument(
        "--speed",
        type=float,
        default=d.session_speed,
        help="realistic: the trading day runs N times faster, from the open (60)",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the chaos schedule (1)")
    p.add_argument("--outage", type=float, default=d.outage_s, help="Redis/S3 downtime, s (30)")
    p.add_argument("--warmup", type=float, default=d.warmup_s, help="warm-up, s (20)")
    p.add_argument("--settle", type=float, default=d.settle_s, help="settle phase, s (20)")
    p.add_argument("--drops", type=int, default=0, help="WebSocket drops (0: by duration)")
    p.add_argument(
        "--part-size", type=int, default=None, help="S3_PART_SIZE_BYTES (default 16 MiB)"
    )
    p.add_argument(
        "--s3-down-at-start", type=float, default=d.s3_down_at_start_s,
        help="S3 unreachable for the service's first seconds (5; 0: off)",
    )  # fmt: skip
    p.add_argument(
        "--ha", action=argparse.BooleanOptionalAction, default=d.ha,
        help="HA_ENABLED=true, a standby, a handover and a SIGKILL failover (the default; "
        "--no-ha: the single-task mode)",
    )  # fmt: skip
    p.add_argument(
        "--shutdown-timeout", type=float, default=d.shutdown_timeout_s,
        help="SHUTDOWN_TIMEOUT_SEC (90; with HA also the wait before other writers' uploads)",
    )  # fmt: skip
    p.add_argument("--workdir", type=Path, default=None, help="keep the logs here")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--plan", action="store_true", help="print the schedule and exit")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    cfg = SoakConfig(
        duration_s=a.duration, rate=a.rate, symbols=a.symbols, market=a.market, seed=a.seed,
        session_speed=a.speed,
        outage_s=a.outage, warmup_s=a.warmup, settle_s=a.settle, drops=a.drops,
        part_size_bytes=a.part_size, s3_down_at_start_s=a.s3_down_at_start,
        redis_failover=hosts_file_writable(), ha=a.ha,
        shutdown_timeout_s=a.shutdown_timeout,
        workdir=str(a.workdir) if a.workdir else None,
    )  # fmt: skip
    if not cfg.redis_failover:
        print("soak: /etc/hosts is not writable: no Redis failover in this run", file=sys.stderr)
    try:
        plan = schedule(cfg)
    except ValueError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 2
    if a.plan:
        for f in plan:
            print(f"{f.at_s:8.1f} s  {f.kind:<13} {f.host or '':<9} {f.params or ''}")
        return 0
    collected = asyncio.run(run_soak(cfg, progress=lambda m: print(m, flush=True)))
    checks, recoveries, figures = judge(collected)
    print(render(checks, recoveries, figures))
    ok = all(c.ok for c in checks)
    if a.json:
        a.json.write_text(
            json.dumps(
                {
                    "config": asdict(cfg),
                    "ok": ok,
                    "checks": [asdict(c) for c in checks],
                    "figures": figures,
                },
                indent=2,
                default=str,
            )  # fmt: skip
        )
    if ok:
        remove_workdir(collected)
    else:
        print(f"soak: FAILED; logs kept in {collected.workdir}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
