"""``python -m bench`` (``./scripts/bench``): the benchmark of issue 7.

Runs the real service (``python -m polygon_runner run``) against the local simulator (one
process per feed host) and a private ``redis-server``, plus the feed ceiling (the simulator
feeding a do-nothing client) and the plain comparator, and prints one row per workload:
medians of ``--repeat`` runs with their min–max, the issue's targets marked ✓/✗
(informational), and every figure as a ratio to the comparator. Exit code 1 only when a run
failed: it did not complete, or data was dropped or wrong. See README.md, "Benchmark".
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.probe import busy_cpu_seconds
from bench.report import add_targets, machine, render, summarise, to_json
from bench.run_one import RunResult, run_once
from bench.workloads import FULL, QUICK, Sizes, Workload, workloads

ALWAYS = ("feed", "cmp")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="./scripts/bench", description=__doc__.split("\n\n")[1])
    p.add_argument("--quick", action="store_true", help="tiny sizes, 1 repeat (CI)")
    p.add_argument(
        "--workloads",
        default="1,2,3,4,5,day",
        help="comma-separated workload numbers of issue 7 and 'day' (the realistic day; "
        "default 1,2,3,4,5,day); the feed ceiling and the comparator always run",
    )
    p.add_argument("--repeat", type=int, default=None, help="runs per workload (default 3)")
    p.add_argument("--events", type=int, default=None, help="events per throughput run")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument(
        "--settle",
        type=float,
        default=None,
        help="before each run, wait up to this many seconds for the machine to go idle "
        "(default 10; 0 with --quick)",
    )
    p.add_argument("--keep-logs", action="store_true", help="keep every run's logs")
    p.add_argument(
        "--baseline",
        type=Path,
        default=None,
        metavar="SRC",
        help="also run every sink workload with the sink from this src folder (e.g. a "
        "worktree of an older commit), right after the working tree's, and show the ratio",
    )
    p.add_argument(
        "--load",
        type=int,
        default=0,
        help="run N busy-loop processes (nice 0) beside the whole benchmark, to see how the "
        "figures hold on a busy machine (default 0)",
    )
    return p


def _selected(spec: str, sizes: Sizes) -> list[Workload]:
    wanted = {part.strip() for part in spec.split(",") if part.strip()}
    unknown = wanted - {"1", "2", "3", "4", "5", "day"}
    if unknown:
        raise SystemExit(f"bench: unknown workload(s) {sorted(unknown)}; use 1-5 or day")
    return [w for w in workloads(sizes) if w.key in ALWAYS or w.number in wanted]


def _with_baseline(chosen: list[Workload], src: Path) -> list[Workload]:
    """Each sink workload followed by the same with the sink from ``src``."""
    if not (src / "polygon_runner").is_dir():
        raise SystemExit(f"bench: {src} holds no polygon_runner package")
    out: list[Workload] = []
    for w in chosen:
        out.append(w)
        if w.client == "sink":
            title = f"{w.title} (baseline)"
            out.append(dataclasses.replace(w, key=f"base-{w.key}", title=title, sink_src=str(src)))
    return out


def _settle(limit_s: float, load: int) -> None:
    """Wait (up to ``limit_s``) until the machine is nearly idle: < 0.25 cores busy besides
    the ``load`` busy loops."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        before = busy_cpu_seconds()
        time.sleep(0.25)
        if (busy_cpu_seconds() - before) / 0.25 < 0.25 + load:
            return


def _start_load(n: int) -> list[subprocess.Popen[bytes]]:
    """``n`` busy loops at the default priority, one process each."""
    argv = ["nice", "-n", "0", sys.executable, "-c", "while True: pass"]
    return [subprocess.Popen(argv, stdin=subprocess.DEVNULL) for _ in range(n)]


def _stop_load(hogs: list[subprocess.Popen[bytes]]) -> None:
    for hog in hogs:
        hog.kill()
        hog.wait()


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _describe(r: RunResult, took_s: float) -> str:
    if not r.ok:
        return f"FAILED ({took_s:.1f} s): {'; '.join(r.problems)}"
    text = f"{r.events_per_s:,.0f} ev/s, {r.cpu_us_per_event:.2f} µs/ev"
    if r.latency_ms:
        text += f", {len(r.latency_ms)} latency samples"
    return text + f" ({took_s:.1f} s)"


def _run_all(
    args: argparse.Namespace,
    chosen: list[Workload],
    repeat: int,
    settle: float,
    workdir: Path,
    results: dict[str, list[RunResult]],
) -> None:
    total, done = repeat * len(chosen), 0
    for rep in range(repeat):
        for w in chosen:
            done += 1
            _settle(settle, args.load)
            rundir = workdir / f"{w.key}-{rep + 1}"
            rundir.mkdir()
            t = time.monotonic()
            result = run_once(w, rundir)
            results[w.key].append(result)
            _progress(
                f"[{done}/{total}] {w.title}, run {rep + 1}/{repeat}: "
                f"{_describe(result, time.monotonic() - t)}"
            )
            if result.ok and not args.keep_logs:
                shutil.rmtree(rundir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.events:
        sizes = dataclasses.replace(sizes, events=args.events)
    repeat = args.repeat or sizes.repeat
    settle = args.settle if args.settle is not None else (0.0 if args.quick else 10.0)
    chosen = _selected(args.workloads, sizes)
    if args.baseline is not None:
        chosen = _with_baseline(chosen, args.baseline.resolve())
    started = time.monotonic()
    host = machine()
    print(
        f"machine: {host['cpu']}, {host['cores']} cores ({host['usable_cores']} usable), "
        f"{host['memory_gb']} GB, Linux {host['kernel']}, Python {host['python']}, "
        f"redis-server {host['redis']}, load {host['loadavg'][0]:.2f}",
        flush=True,
    )
    print(
        f"sizes: {sizes.events:,} events per throughput run, {sizes.symbols} / "
        f"{sizes.wide_symbols:,} symbols, comparator {sizes.comparator_events:,} events, "
        f"latency {sizes.latency_s:g} s per rate, realistic day {sizes.day_s:g} s at "
        f"{sizes.day_rate:,.0f} T+Q/s midday; {repeat} run(s) each, medians "
        "(min–max); targets are informational",
        flush=True,
    )
    if args.load:
        print(f"load: {args.load} busy-loop process(es) beside every run", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="polygon-bench-"))
    results: dict[str, list[RunResult]] = {w.key: [] for w in chosen}
    hogs = _start_load(args.load)
    try:
        _run_all(args, chosen, repeat, settle, workdir, results)
    finally:
        _stop_load(hogs)
    summaries = {w.key: summarise(w, results[w.key]) for w in chosen}
    add_targets(summaries)
    elapsed = time.monotonic() - started
    ok = all(s.ok for s in summaries.values())
    if args.json is not None:  # first: the figures survive whatever happens below
        document = {
            "machine": host,
            "sizes": _sizes(sizes),
            "repeat": repeat,
            "load": args.load,
            "seconds": round(elapsed, 1),
            "ok": ok,
            "workloads": to_json(summaries),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    print()
    render(summaries, lambda line: print(line, flush=True))
    print(
        "\nfeed row: the simulators pushing to a do-nothing client (CPU: the simulators' "
        "µs/event). sink cores: the sink's CPU seconds per second (near 1.00: the sink is "
        "the bottleneck). p50/p99: event time (simulator wall clock) to the value seen in "
        "Redis, an upper bound (README.md, Benchmark)."
    )
    print(f"total time {elapsed:.0f} s; {'all runs completed and verified' if ok else 'FAILED'}")
    if args.json is not None:
        print(f"results written to {args.json}")
    if ok and not args.keep_logs:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"logs kept in {workdir}")
    return 0 if ok else 1


def _sizes(sizes: Sizes) -> dict[str, float]:
    return {name: getattr(sizes, name) for name in Sizes.__slots__}


if __name__ == "__main__":
    sys.exit(main())
