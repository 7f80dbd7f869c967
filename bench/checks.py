"""How a run ends and what it must satisfy.

* Seeded flat-out runs end when every key holds its final event: first the key of each
  host's very last event is polled (every 5 ms), then the keys of each host's last frame;
  then every key is checked once (the end moves to the first full check that passes, if
  the first one does not).
* Paced (latency) runs end when both simulators have delivered everything and the sink's
  ``/metrics`` shows every event taken and no key pending (scraped every 50 ms, only after
  the feeds are done). Each simulator must have delivered exactly its budget on its own
  host's channels only (``AM``/``FMV`` real-time, ``T``/``Q`` delayed), and the sink's
  per-channel counts must equal the two simulators' together.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

from bench.context import RunContext, Snapshot
from bench.expected import Expected
from bench.probe import metric_sum, scrape_metrics
from bench.procs import Child
from polygon_core.subscriptions import FeedRole

__all__ = [
    "LATENCY_WARMUP_S",
    "check_feeds",
    "check_sink",
    "latencies",
    "until_drained",
    "until_final",
    "until_written",
]

LATENCY_WARMUP_S = 0.5


def until_final(
    run: RunContext, client: Child, expected: Expected, t0: float, alive: Callable[[], bool]
) -> Snapshot | None:
    probe, r = run.probe, run.result
    assert probe is not None
    timeout = 60.0 + run.w.events / 10_000
    seen = probe.wait_finals(expected.last_keys, expected, timeout, alive)
    if seen is not None:
        seen = probe.wait_finals(expected.sentinels, expected, 30.0, alive)
    if seen is None:
        r.fail(f"did not complete: the last events were not in Redis after {timeout:.0f} s")
        return None
    end = run.snap(client, seen)
    bad, examples = probe.mismatches(expected)
    deadline = time.monotonic() + 10.0
    while bad and time.monotonic() < deadline:
        time.sleep(0.005)
        bad, examples = probe.mismatches(expected)
        if not bad:
            end = run.snap(client)
            r.extra["note"] = f"full check passed {end.t - seen:.3f} s after the last keys"
    if bad:
        r.fail(f"{bad} of {len(expected.finals)} keys do not hold their final event: {examples}")
        return None
    r.extra["keys_verified"] = len(expected.finals)
    return end


def _feeds_done(run: RunContext) -> bool:
    """Wait until both paced simulators delivered their share (failing the run if not)."""
    timeout = 60.0 + 3 * run.w.events / run.w.rate
    for role, host in run.hosts.items():
        if not host.wait_delivered(run.per_host[role], timeout):
            run.result.fail(
                f"the {role} simulator delivered {host.delivered} of {run.per_host[role]}"
            )
            return False
    return True


def until_drained(
    run: RunContext, client: Child, health_port: int, alive: Callable[[], bool]
) -> Snapshot | None:
    r, w = run.result, run.w
    if not _feeds_done(run):
        return None
    deadline = time.monotonic() + 30.0
    while alive() and time.monotonic() < deadline:
        metrics = scrape_metrics(health_port)
        if (
            metric_sum(metrics, "polygon_events_total") >= w.events
            and metric_sum(metrics, "polygon_pending_keys") == 0
        ):
            return run.snap(client)
        time.sleep(0.05)
    r.fail("the sink did not take and write every event within 30 s of the end of the feed")
    return None


def latencies(run: RunContext, sent: dict[str, Sequence[float]], t0_wall: float) -> None:
    """Resolve the sampler's observations against the simulators' frame send times."""
    sampler, r = run.sampler, run.result
    assert sampler is not None
    if sampler.error is not None:
        r.fail(f"latency sampler failed: {sampler.error!r}")
    since = t0_wall + LATENCY_WARMUP_S
    kept: list[tuple[float, float, float]] = []
    unknown = 0
    for seen, previous, role, frame, updated_ms in sampler.observations:
        frames = sent[role]
        if seen < since:
            continue
        if not 0 < frame < len(frames) or not frames[frame]:
            unknown += 1
            continue
        at = frames[frame]
        kept.append(((seen - at) * 1e3, (seen - max(previous, at)) * 1e3, updated_ms - at * 1e3))
    if unknown:
        r.fail(f"{unknown} sampled values carry no known frame number")
    if not kept:
        r.fail("no latency observations")
        return
    r.latency_ms = [lat for lat, _, _ in kept]
    r.extra["latency_samples"] = len(kept)
    r.extra["latency_window_ms_median"] = round(statistics.median(w for _, w, _ in kept), 3)
    flushed = statistics.quantiles([f for _, _, f in kept], n=100)
    r.extra["updated_at_minus_sent_ms_p50_p99"] = [round(flushed[49], 1), round(flushed[98], 1)]


def until_written(
    run: RunContext, client: Child, start: Snapshot, alive: Callable[[], bool]
) -> Snapshot | None:
    """The reference writer: both simulators delivered everything and Redis ran one ``SET``
    per event since the first write (plus the ones before it)."""
    r, w, probe = run.result, run.w, run.probe
    assert probe is not None
    if not _feeds_done(run):
        return None
    deadline = time.monotonic() + 30.0
    while alive() and time.monotonic() < deadline:
        if probe.commandstats().get("set", 0) >= w.events:
            return run.snap(client)
        time.sleep(0.05)
    r.fail("the reference writer did not write every event within 30 s of the end of the feed")
    return None


def check_feeds(run: RunContext) -> dict[str, int]:
    """What the two simulators of a paced run delivered, per channel (their last stats
    line); fails the run when a host sent another host's channel or missed its budget."""
    r, delivered = run.result, dict[str, int]()
    for role, host in run.hosts.items():
        counts = {c: n for c, n in host.counts.items() if n}
        r.extra.setdefault("delivered", {})[role] = counts
        foreign = sorted(set(counts) - set(FeedRole(role).channels))
        if foreign:
            r.fail(f"the {role} simulator delivered {foreign}: not its host's channels")
        if sum(counts.values()) != run.per_host[role]:
            r.fail(f"the {role} simulator delivered {counts}, its budget {run.per_host[role]}")
        delivered |= counts
    return delivered


def check_sink(
    run: RunContext,
    metrics: dict[str, dict[str, float]],
    expected: Expected | None,
    delivered: dict[str, int] | None = None,
) -> None:
    """The sink took what the replay (``expected``) or the simulators (``delivered``, per
    channel) say was sent, dropped and rejected nothing, and never lost Redis or a feed."""
    r, w = run.result, run.w
    events = {k.split('"')[1]: int(v) for k, v in metrics.get("polygon_events_total", {}).items()}
    events = {c: n for c, n in events.items() if n}
    taken = sum(events.values())
    if expected is not None and events != {c: n for c, n in expected.counts.items() if n}:
        r.fail(f"sink counted {events} per channel, the replay says {expected.counts}")
    elif delivered is not None and events != delivered:
        r.fail(f"sink counted {events} per channel, the simulators delivered {delivered}")
    elif taken != w.events:
        r.fail(f"sink took {taken} events, the simulators delivered {w.events}")
    for name in (
        "polygon_late_dropped_total",
        "polygon_rejects_total",
        "polygon_redis_flush_failures_total",
        "polygon_feed_disconnects_total",
    ):
        if metric_sum(metrics, name):
            r.fail(f"{name} = {metric_sum(metrics, name):.0f}")
    r.extra["redis_writes"] = int(metric_sum(metrics, "polygon_redis_writes_total"))
    if w.s3:
        lines = metric_sum(metrics, "polygon_archive_lines_appended")
        dropped = metric_sum(metrics, "polygon_archive_dropped_lines")
        r.extra["archive"] = {"lines_appended": int(lines), "dropped_lines": int(dropped)}
        if lines != w.events or dropped:
            r.fail(f"archive appended {lines:.0f} lines of {w.events}, dropped {dropped:.0f}")
