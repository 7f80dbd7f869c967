"""Medians, spreads, targets and ratios; the printed table and the JSON document."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.run_one import RunResult
from bench.workloads import Workload

__all__ = ["Summary", "machine", "render", "summarise", "to_json"]

METRICS = (
    "events_per_s",
    "cpu_us_per_event",
    "busy_cores",
    "peak_rss_mb",
    "commands_per_event",
    "p50_ms",
    "p99_ms",
)
"""The figures of a run (:func:`figures`), in the table's column order."""


def _percentile(values: Sequence[float], q: int) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def figures(r: RunResult) -> dict[str, float | None]:
    lat = r.latency_ms
    return {
        "events_per_s": r.events_per_s,
        "cpu_us_per_event": r.cpu_us_per_event,
        "busy_cores": r.cpu_s / r.seconds if r.seconds > 0 and r.peak_rss_bytes else None,
        "peak_rss_mb": r.peak_rss_bytes / 2**20 if r.peak_rss_bytes else None,
        "commands_per_event": r.commands_per_event if r.redis_commands else None,
        "p50_ms": _percentile(lat, 50) if lat else None,
        "p99_ms": _percentile(lat, 99) if lat else None,
    }


@dataclass
class Target:
    metric: str
    op: str  # ">=" or "<="
    value: float
    label: str
    per_run: Callable[[RunResult], bool] | None = None
    """When set, the target holds if it holds for every completed run (not the median)."""

    def met(self, figure: float | None) -> bool | None:
        if figure is None:
            return None
        return figure >= self.value if self.op == ">=" else figure <= self.value


@dataclass
class Summary:
    workload: Workload
    runs: list[RunResult]
    median: dict[str, float | None]
    low: dict[str, float | None]
    high: dict[str, float | None]
    targets: list[Target]

    @property
    def ok(self) -> bool:
        return bool(self.runs) and all(r.ok for r in self.runs)

    def checks(self) -> list[tuple[Target, bool | None]]:
        out: list[tuple[Target, bool | None]] = []
        for t in self.targets:
            done = [r for r in self.runs if r.ok]
            if t.per_run is not None:
                out.append((t, all(t.per_run(r) for r in done) if done else None))
            else:
                out.append((t, t.met(self.median.get(t.metric))))
        return out


def summarise(w: Workload, runs: list[RunResult]) -> Summary:
    good = [figures(r) for r in runs if r.ok] or [figures(r) for r in runs]
    median: dict[str, float | None] = {}
    low: dict[str, float | None] = {}
    high: dict[str, float | None] = {}
    for m in METRICS:
        values = [v for f in good if (v := f[m]) is not None]
        median[m] = statistics.median(values) if values else None
        low[m] = min(values) if values else None
        high[m] = max(values) if values else None
    return Summary(w, runs, median, low, high, [])


def add_targets(summaries: dict[str, Summary]) -> None:
    """The targets of issue 7 (informational: they never change the exit code)."""
    t = Target
    fixed = {
        "1": [t("events_per_s", ">=", 500_000, "≥500k"), t("cpu_us_per_event", "<=", 2.0, "≤2")],
        "2": [t("events_per_s", ">=", 400_000, "≥400k"), t("peak_rss_mb", "<=", 150, "≤150")],
        "5": [t("events_per_s", ">=", 100_000, "≥100k")],
    }
    for key, targets in fixed.items():
        if key in summaries:
            summaries[key].targets = targets
    one = summaries.get("1")
    if "4" in summaries and one is not None and one.median["cpu_us_per_event"]:
        base = one.median["cpu_us_per_event"]
        summaries["4"].targets = [t("cpu_us_per_event", "<=", base * 1.3, f"≤1.3×{base:.2f}")]
    # Issue 12, against the baseline sink of the same run (--baseline): workload 1 keeps
    # 90 % of its throughput, and 200,000 events/s costs no more Redis commands per event.
    old_one, old_3c = summaries.get("base-1"), summaries.get("base-3c")
    if one is not None and old_one is not None and old_one.median["events_per_s"]:
        floor = 0.9 * old_one.median["events_per_s"]
        one.targets.append(t("events_per_s", ">=", floor, "≥0.9×base"))
    if "3c" in summaries and old_3c is not None and old_3c.median["commands_per_event"]:
        most = old_3c.median["commands_per_event"]
        summaries["3c"].targets.append(t("commands_per_event", "<=", most, "≤base"))
    five = summaries.get("5")
    if five is not None:
        # Conflation: at most one SET per key per flush interval (1 s by default on
        # Upstash), so a run of D seconds sends at most keys x (D + 1) commands.
        keys = 4 * five.workload.symbols

        def conflated(r: RunResult) -> bool:
            return r.redis_commands <= keys * (r.seconds + 1)

        five.targets.append(t("commands_per_event", "<=", 0, "≤1/key/s", conflated))


FLOOR_RATIO = 2.0
"""Issue 12: the sink's p50 and p99 at most this many times the reference writer's."""


def floor_ratio(s: Summary, floor: Summary, metric: str) -> float | None:
    """The sink's median ``metric`` over the reference writer's, same run."""
    mine, theirs = s.median.get(metric), floor.median.get(metric)
    return mine / theirs if mine is not None and theirs else None


def _floor_ratios(s: Summary, floor: Summary) -> list[str]:
    out = []
    for m, _, _ in COLUMNS:
        ratio = floor_ratio(s, floor, m)
        if ratio is None:
            out.append("-")
        elif m in ("p50_ms", "p99_ms"):
            out.append(f"{ratio:.2f}× {'✓' if ratio <= FLOOR_RATIO else '✗'}≤{FLOOR_RATIO:g}")
        else:
            out.append(f"{ratio:.3g}×")
    return out


def _plain_ratios(s: Summary, other: Summary) -> list[str]:
    return [
        "-" if (ratio := floor_ratio(s, other, m)) is None else f"{ratio:.3g}×"
        for m, _, _ in COLUMNS
    ]


def _fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    if metric == "events_per_s":
        return f"{value:,.0f}"
    if metric == "peak_rss_mb":
        return f"{value:.0f}"
    if metric == "commands_per_event":
        return f"{value:.3f}" if value < 10 else f"{value:.0f}"
    if metric in ("p50_ms", "p99_ms"):
        return f"{value:.1f}"
    return f"{value:.2f}"


def _short(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    if metric == "events_per_s":
        return f"{value / 1000:.1f}k" if value >= 10_000 else f"{value:,.0f}"
    return _fmt(metric, value)


COLUMNS: list[tuple[str, str, int]] = [
    ("events_per_s", "events/s", 26),
    ("cpu_us_per_event", "CPU µs/ev", 22),
    ("busy_cores", "sink cores", 12),
    ("peak_rss_mb", "peak RSS MB", 16),
    ("commands_per_event", "Redis cmd/ev", 18),
    ("p50_ms", "p50 ms", 14),
    ("p99_ms", "p99 ms", 16),
]
TITLE_WIDTH = 44


def render(summaries: dict[str, Summary], write: Callable[[str], None]) -> None:
    head = f"{'workload':<{TITLE_WIDTH}}" + "".join(f"{h:>{w}}" for _, h, w in COLUMNS)
    write(head + "  result")
    write("-" * (len(head) + 8))
    base = summaries.get("cmp")
    for key, s in summaries.items():
        marks: dict[str, str] = {}
        for target, ok in s.checks():
            if ok is not None:
                mark = f" {'✓' if ok else '✗'}{target.label}"
                marks[target.metric] = marks.get(target.metric, "") + mark
        cells = [_fmt(m, s.median[m]) + marks.get(m, "") for m, _, _ in COLUMNS]
        result = "ok" if s.ok else "FAILED"
        write(f"{s.workload.title:<{TITLE_WIDTH}}" + _cells(cells) + f"  {result}")
        if len(s.runs) > 1:
            spread = [
                "-" if s.low[m] is None else f"{_short(m, s.low[m])}–{_short(m, s.high[m])}"
                for m, _, _ in COLUMNS
            ]
            write(f"{'  min–max of ' + str(len(s.runs)) + ' runs':<{TITLE_WIDTH}}" + _cells(spread))
        if (
            base is not None
            and key not in ("cmp", "feed", "day", "base-day")
            and not key.startswith(("3", "ref", "base"))
        ):
            write(f"{'  × comparator':<{TITLE_WIDTH}}" + _cells(_ratios(s, base, key)))
        for r in s.runs:
            for problem in r.problems:
                write(f"  ! run failed: {problem}")
        floor = summaries.get(f"ref-{key.removeprefix('base-')}")
        if floor is not None:
            write(f"{'  × reference writer':<{TITLE_WIDTH}}" + _cells(_floor_ratios(s, floor)))
        older = summaries.get(f"base-{key}")
        if older is not None:
            write(f"{'  × baseline (next row)':<{TITLE_WIDTH}}" + _cells(_plain_ratios(s, older)))
        cores = _median_cores(s.runs)
        if cores:
            shown = ", ".join(f"{k} {v:.2f}" for k, v in cores.items() if k != "machine")
            total = f" = {cores['machine']:.2f} of {os.cpu_count()}" if "machine" in cores else ""
            ratios = [
                r.extra["client_vs_feed_cpu"] for r in s.runs if "client_vs_feed_cpu" in r.extra
            ]
            steady = f"; client CPU = {statistics.median(ratios):.2f}× feed CPU" if ratios else ""
            write(f"  cores: {shown}{total}{steady}")
        foreign = [r.extra.get("foreign_cores", 0.0) for r in s.runs]
        if foreign and max(foreign) > 0.25:
            write(f"  ! other processes used up to {max(foreign):.2f} cores during these runs")


def _median_cores(runs: Sequence[RunResult]) -> dict[str, float]:
    """Median cores per process kind over ``runs`` (``client`` is the sink, comparator or
    null client; ``feed`` the two simulators; ``other`` processes outside the benchmark)."""
    rows = [r.extra["cores"] for r in runs if "cores" in r.extra]
    names = dict.fromkeys(name for row in rows for name in row)
    return {n: statistics.median(row[n] for row in rows if n in row) for n in names}


def _cells(cells: Sequence[str]) -> str:
    return "".join(f"{c:>{w}}" for c, (_, _, w) in zip(cells, COLUMNS, strict=True))


def _ratios(s: Summary, base: Summary, key: str) -> list[str]:
    out = []
    for m, _, _ in COLUMNS:
        mine, theirs = s.median[m], base.median[m]
        if mine is None or not theirs:
            out.append("-")
            continue
        text = f"{mine / theirs:.3g}×"
        if key == "1" and m == "events_per_s":
            text += " ✓≥30×" if mine / theirs >= 30 else " ✗≥30×"
        out.append(text)
    return out


def _vs_floor(summaries: dict[str, Summary], key: str) -> dict[str, float | None] | None:
    floor = summaries.get(f"ref-{key.removeprefix('base-')}")
    if floor is None:
        return None
    return {
        m: floor_ratio(summaries[key], floor, m) for m in ("p50_ms", "p99_ms", "cpu_us_per_event")
    }


def machine() -> dict[str, Any]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    try:
        redis_version = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, timeout=10
        ).stdout.split()[2]
    except (OSError, IndexError, subprocess.SubprocessError):
        redis_version = "unknown"
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis": redis_version.removeprefix("v="),
        "loadavg": os.getloadavg(),
    }


def to_json(summaries: dict[str, Summary]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, s in summaries.items():
        out[key] = {
            "title": s.workload.title,
            "ok": s.ok,
            "median": s.median,
            "min": s.low,
            "max": s.high,
            "targets": [{"metric": t.metric, "target": t.label, "met": ok} for t, ok in s.checks()],
            "vs_reference_writer": _vs_floor(summaries, key),
            "runs": [
                {
                    "ok": r.ok,
                    "problems": r.problems,
                    "events": r.events,
                    "seconds": r.seconds,
                    "sink_cpu_s": r.cpu_s,
                    "redis_commands": r.redis_commands,
                    **figures(r),
                    "extra": r.extra,
                }
                for r in s.runs
            ],
        }
    return out
