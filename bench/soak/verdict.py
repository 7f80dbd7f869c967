"""The soak's judgement: the seven checks of issue 8 and the takeovers of issue 14, each
with its figure, and the tables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.soak.chaos import Outage
from bench.soak.observe import MetricsPoller, Sample
from bench.soak.plan import COOLDOWN_S, HOLD_S
from bench.soak.run import Collected
from polygon_core.subscriptions import FeedRole

__all__ = ["Check", "Recovery", "judge", "render"]

HOST_CHANNELS = {r.value: tuple(c.value for c in r.channels) for r in FeedRole}
LAG_CHANNELS = {"realtime": ("FMV",), "delayed": ("T", "Q")}
"""Channels whose lag says "caught up" (AM's lag follows bar ends, not arrivals)."""
ALL_LAG = ("T", "Q", "FMV")
S3_KINDS = ("s3_down", "s3_down_at_start")


@dataclass
class Check:
    name: str
    ok: bool
    figure: str


@dataclass
class Recovery:
    outage: Outage
    resumed_s: float | None
    """Outage end to the first write (Redis value, S3 part, or events of that host)."""
    lag_ok_s: float | None
    """Outage end to lag back at or under ``lag_ok_s`` and staying there ``HOLD_S``."""
    drained_s: float | None = None
    """S3 only: outage end to the archive's backlog uploaded (informational)."""

    def within(self, limit_s: float, s3_resume_limit_s: float) -> bool:
        """Lag settled within ``limit_s``; writes resumed within it too, or within
        ``s3_resume_limit_s`` for an S3 outage (see ``SoakConfig.s3_resume_limit_s``)."""
        resume_limit_s = s3_resume_limit_s if self.outage.kind in S3_KINDS else limit_s
        return (
            self.resumed_s is not None
            and self.resumed_s <= resume_limit_s
            and self.lag_ok_s is not None
            and self.lag_ok_s <= limit_s
        )


CALM_FACTOR = 2.0


def _first(samples: list[Sample], ended: float, test: Any) -> float | None:
    for s in samples:
        if s.at >= ended and test(s):
            return round(s.at - ended, 2)
    return None


def _settled(samples: list[Sample], ended: float, test: Any) -> float | None:
    """Outage end to the first sample from which ``test`` holds for ``HOLD_S``."""
    start: Sample | None = None
    for s in samples:
        if not test(s):
            start = None
        elif start is None:
            start = s
        if start is not None and s.at - start.at >= HOLD_S:
            return round(max(0.0, start.at - ended), 2)
    return None


def recovery(o: Outage, poller: MetricsPoller, lag_ok_s: float) -> Recovery:
    if o.ended is None:
        return Recovery(o, None, None)
    samples = poller.since(o.ended)
    before = poller.before(o.ended) or (samples[0] if samples else None)
    if before is None:
        return Recovery(o, None, None)
    drained = None
    channels: tuple[str, ...] = ALL_LAG
    if o.kind in ("redis_down", "redis_failover", "handover", "sigkill"):
        writes = before.get("polygon_redis_writes_total")
        resumed = _first(samples, o.ended, lambda s: s.get("polygon_redis_writes_total") > writes)
    elif o.kind in S3_KINDS:
        # Redis must not suffer while the archive uploads its backlog.
        parts = before.get("polygon_archive_parts_uploaded")
        resumed = _first(
            samples, o.ended, lambda s: s.get("polygon_archive_parts_uploaded") > parts
        )
        level = poller.before(o.began)
        floor = 2 * (level.get("polygon_archive_bytes_buffered") if level else 0) + (32 << 20)
        drained = _first(
            samples, o.ended, lambda s: s.get("polygon_archive_bytes_buffered") <= floor
        )
    else:
        assert o.host is not None
        host_channels = HOST_CHANNELS[o.host]
        seen = sum(before.events(c) for c in host_channels)
        resumed = _first(samples, o.ended, lambda s: sum(s.events(c) for c in host_channels) > seen)
        channels = LAG_CHANNELS[o.host]
    lag_ok = _settled(samples, o.ended, lambda s: all(s.lag(c) <= lag_ok_s for c in channels))
    return Recovery(o, resumed, lag_ok, drained)


def _calm_lags(c: Collected, limit_s: float) -> list[float]:
    """Per sample in the window outside outages (and their allowed recovery time, and
    feed cooldowns), the largest lag of ``T``, ``Q`` and ``FMV``; sorted."""
    if c.poller is None or c.chaos is None:
        return []
    spans = [(o.began, (o.ended or o.began) + limit_s + HOLD_S) for o in c.chaos.outages]
    return sorted(
        max(s.lag(ch) for ch in ALL_LAG)
        for s in c.poller.samples
        if c.window[0] <= s.at <= c.window[1] and not any(a <= s.at <= b for a, b in spans)
    )


def normal_lag(cfg: Any, calm: list[float]) -> float:
    """What "lag back to normal" means in this run: ``lag_ok_s``, or twice the median lag
    outside outages if that is higher. The reference comes from the same run: on a shared
    machine the service (or the simulator feeding it) can trail by seconds all along, and
    an outage is then over when the lag is back to where it was, not below a figure only
    an idle machine reaches. Still failing: a service that does not catch up after an
    outage, or takes longer than the recovery limit to."""
    median = calm[len(calm) // 2] if calm else float("inf")
    return max(cfg.lag_ok_s, CALM_FACTOR * median)


def judge(c: Collected) -> tuple[list[Check], list[Recovery], dict[str, Any]]:
    cfg = c.cfg
    checks: list[Check] = []
    figures: dict[str, Any] = {}
    if c.fatal is not None or c.final is None:
        checks.append(Check("run completed", False, c.fatal or "no final state"))
    final = c.final or Sample(0.0, {})

    stop = f"exit {c.exit_code} after {c.stop_seconds or 0:.1f} s"
    checks.append(
        Check(
            "1 alive; exit 0 on SIGTERM within the deadline",
            c.fatal is None
            and c.exit_code == 0
            and (c.stop_seconds or 1e9) <= cfg.shutdown_timeout_s,
            stop,
        )
    )

    w = c.watcher
    rollbacks = w.rollbacks if w else ["no watcher"]
    checks.append(
        Check(
            "2 Redis = newest delivered, TTL set",
            not c.redis_mismatches and c.redis_checked > 0,
            f"{c.redis_checked} keys, {len(c.redis_mismatches)} wrong, {c.redis_expired} expired"
            + (f" (first: {c.redis_mismatches[0]})" if c.redis_mismatches else ""),
        )
    )
    checks.append(
        Check(
            "2 never rolled back (sampled)",
            not rollbacks and bool(w and w.reads),
            f"{w.reads if w else 0} reads of {w.batch if w else 0} keys, "
            f"{len(rollbacks)} rollbacks" + (f" (first: {rollbacks[0]})" if rollbacks else ""),
        )
    )

    calm = _calm_lags(c, cfg.recovery_limit_s)
    normal = normal_lag(cfg, calm)
    recoveries = (
        [recovery(o, c.poller, normal) for o in c.chaos.outages] if (c.chaos and c.poller) else []
    )
    slow = [r for r in recoveries if not r.within(cfg.recovery_limit_s, cfg.s3_resume_limit_s)]
    worst = max((r.resumed_s or 0.0 for r in recoveries), default=0.0)
    worst_lag = max((r.lag_ok_s or 0.0 for r in recoveries), default=0.0)
    checks.append(
        Check(
            f"3 writes resume, lag normal ≤ {cfg.recovery_limit_s:g} s after each outage "
            f"(S3 parts ≤ {cfg.s3_resume_limit_s:g} s)",
            bool(recoveries) and not slow and bool(calm),
            f"{len(recoveries)} outages, resume ≤ {worst:.2f} s, lag back to ≤ {normal:.2f} s "
            f"(normal: 2x the calm median, at least {cfg.lag_ok_s:g} s) within ≤ "
            f"{worst_lag:.2f} s"
            + (f"; slow: {', '.join(r.outage.kind for r in slow)}" if slow else ""),
        )
    )

    channels = ("AM", "FMV", "T", "Q")
    events = {ch: int(final.events(ch)) for ch in channels}
    appended = {
        ch: int(final.get(f'polygon_archive_lines_appended{{channel="{ch}"}}')) for ch in channels
    }
    dropped = {
        ch: int(final.get(f'polygon_archive_dropped_lines{{channel="{ch}"}}')) for ch in channels
    }
    lost = int(final.get("polygon_archive_lost_lines"))
    rejects = int(sum(v for k, v in final.values.items() if k.startswith("polygon_rejects")))
    # Rejected elements of a known channel are archived too (raw, for forensics): the
    # archive holds every event received plus at most the rejects.
    extra = {ch: appended[ch] - events[ch] for ch in channels}
    wrong, tail_lost = _archive_by_task(c)
    left = _left_for_the_next_task(c)
    open_uploads = c.open_uploads - sum(c.open_uploads_by_task.get(t, 0) for t in left)
    markers = max(0, c.markers - 4 * len(left))  # a killed task's folders: one per channel
    checks.append(
        Check(
            "4 archive = every line accepted; no drop, upload or marker left",
            not wrong
            and not sum(dropped.values())
            and not lost
            and not open_uploads
            and not markers
            and min(extra.values()) >= 0
            and sum(extra.values()) <= rejects,
            f"{sum(c.archive_lines.values())} lines = {sum(events.values())} events + "
            f"{sum(extra.values())} rejected elements - {tail_lost} lost at SIGKILL; "
            f"dropped {sum(dropped.values())}, "
            f"lost {lost}, open uploads {c.open_uploads}, markers {c.markers}"
            + (f" (left for the next task by killed {', '.join(left)})" if left else "")
            + (f"; (in S3, accepted) differ: {wrong}" if wrong else ""),
        )
    )
    figures["archive_lost_at_sigkill"] = tail_lost
    outages = c.chaos.outages if c.chaos else []
    abrupt_hosts = {
        o.host
        for o in outages
        if o.kind in ("drop_abrupt", "feed_silent")  # what was sent into the silence is lost
    }
    if c.fences or any(o.kind == "sigkill" for o in outages):
        abrupt_hosts |= set(HOST_CHANNELS)  # a fence and a kill drop both feeds abruptly
    wire_loss = {ch: c.delivered.get(ch, 0) - events[ch] for ch in events}
    bad_wire = {
        ch: n
        for ch, n in wire_loss.items()
        if n < 0 or (n > 0 and not any(ch in HOST_CHANNELS[h] for h in abrupt_hosts if h))
    }
    checks.append(
        Check(
            "4 events received = delivered (except in flight at an abrupt drop or silence)",
            not bad_wire,
            f"in flight at abrupt drops: {sum(wire_loss.values())} events"
            + (f"; unexplained: {bad_wire}" if bad_wire else ""),
        )
    )
    figures["wire_loss"] = wire_loss

    kills = c.chaos.kills if c.chaos else {}
    conn_problems = []
    for host, info in c.connections.items():
        if info["max_authenticated"] != 1 or info["max_open"] != 1:
            conn_problems.append(f"{host}: {info['max_open']} open at once")
        # Each lease term opens the host once, each connection the simulator closed is one
        # reconnect; a fence can end a term before its (re)connect, one per host at most.
        reconnects = info["authenticated"] - c.terms
        if not kills.get(host, 0) - c.fences <= reconnects <= kills.get(host, 0):
            conn_problems.append(
                f"{host}: {info['authenticated'] - c.terms} reconnects for "
                f"{kills.get(host, 0)} drops"
            )
    for r in recoveries:
        o = r.outage
        floor = COOLDOWN_S
        if o.kind in ("evict", "auth_burst") and (o.seconds or 0) < floor:
            conn_problems.append(
                f"{o.kind} on {o.host}: back after {o.seconds:.1f} s < {floor:.0f} s"
            )
    checks.append(
        Check(
            "5 one connection per host; reconnects = drops; cooldowns kept",
            not conn_problems and bool(c.connections),
            "; ".join(
                f"{h}: {i['authenticated'] - c.terms} reconnects / {kills.get(h, 0)} drops"
                for h, i in c.connections.items()
            )
            + f"; {c.terms} lease terms, {c.fences} fenced"
            + (f"; {'; '.join(conn_problems)}" if conn_problems else ""),
        )
    )

    growth = c.rss_end / c.rss_start - 1 if c.rss_start else float("inf")
    checks.append(
        Check(
            f"6 RSS less archive buffers, warm-up vs settle: growth < {cfg.rss_growth_limit:.0%}",
            growth < cfg.rss_growth_limit and c.rss_end > 0,
            f"{c.rss_start / 2**20:.0f} MB -> {c.rss_end / 2**20:.0f} MB ({growth:+.1%}); "
            f"peak RSS {c.rss_peak_start / 2**20:.0f} -> {c.rss_peak_end / 2**20:.0f} MB; "
            f"highest of the run {(c.rss.peak if c.rss else 0) / 2**20:.0f} MB",
        )
    )
    checks.append(
        Check(
            "7 no secret in the logs",
            not c.leaked and c.log_lines > 0,
            f"{c.log_lines} log lines" + (f"; LEAKED: {', '.join(c.leaked)}" if c.leaked else ""),
        )
    )
    if cfg.ha:
        checks.append(_takeovers(c, figures))
    if c.chaos and c.chaos.errors:
        checks.append(Check("chaos schedule carried out", False, "; ".join(c.chaos.errors)))

    figures |= {
        "events_delivered": sum(c.delivered.values()),
        "events_received": sum(events.values()),
        "outages": len(recoveries),
        "first_redis_write_s": c.first_write_s,
        "reconnects": {h: i["authenticated"] - c.terms for h, i in c.connections.items()},
        "lease_terms": c.terms,
        "fenced": c.fences,
        "lag_calm_median_s": round(calm[len(calm) // 2], 3) if calm else None,
        "lag_calm_p90_s": round(calm[int(len(calm) * 0.9)], 3) if calm else None,
        "max_lag_calm_s": round(calm[-1], 3) if calm else None,
        "rss_start_mb": round(c.rss_start / 2**20, 1),
        "rss_end_mb": round(c.rss_end / 2**20, 1),
        "rss_peak_start_mb": round(c.rss_peak_start / 2**20, 1),
        "rss_peak_end_mb": round(c.rss_peak_end / 2**20, 1),
        "rss_peak_mb": round((c.rss.peak if c.rss else 0) / 2**20, 1),
        "archive_dropped": sum(dropped.values()),
        "late_dropped": int(final.get("polygon_late_dropped_total")),
        "rejects": rejects,
        "bad_frames": dict(c.chaos.bad_frames) if c.chaos else {},
        "outages_started_late": c.chaos.late if c.chaos else 0,
        "redis_flush_failures": int(final.get("polygon_redis_flush_failures_total")),
    }
    return checks, recoveries, figures


def _archive_by_task(c: Collected) -> tuple[dict[str, Any], int]:
    """(in S3, appended) per task and channel where they differ beyond what is allowed,
    and the lines lost with SIGKILLed tasks: a task killed loses the tail it had not
    uploaded (as in a crash), never more lines in S3 than it appended; every other task's
    lines are all in S3."""
    wrong: dict[str, Any] = {}
    lost = 0
    for task in set(c.appended_by_task) | set(c.archive_by_task):
        appended = c.appended_by_task.get(task, {})
        stored = c.archive_by_task.get(task, {})
        for ch in set(appended) | set(stored):
            s, a = stored.get(ch, 0), appended.get(ch, 0)
            if task in c.killed and s <= a:
                lost += a - s
            elif s != a:
                wrong[f"{task}:{ch}"] = (s, a)
    return wrong, lost


def _left_for_the_next_task(c: Collected) -> list[str]:
    """SIGKILLed tasks whose open uploads no successor finished: none ran the step for other
    writers' uploads after the kill (a task that took over runs it ``SHUTDOWN_TIMEOUT_SEC``
    after its start-up recovery; stopped before, it leaves them to the next task, as on
    ECS). A successor active long past that (30 s more) must have run it: no excuse then."""
    outages = c.chaos.outages if c.chaos else []
    takeovers = sorted(
        (o for o in outages if o.kind in ("handover", "sigkill") and o.ended), key=lambda o: o.began
    )
    spans = []  # (became active, stopped being active) of each successor
    for i, o in enumerate(takeovers):
        until = takeovers[i + 1].began if i + 1 < len(takeovers) else c.stopped_at
        spans.append((o.ended or 0.0, until))
    due_s = c.cfg.shutdown_timeout_s + 30.0
    left = []
    for o in takeovers:
        if o.kind != "sigkill" or o.task is None:
            continue
        ran = any(at >= o.began for at in c.others_recovered)
        due = any(a >= (o.ended or 0) and b - a >= due_s for a, b in spans)
        if not ran and not due:
            left.append(o.task)
    return left


def _takeovers(c: Collected, figures: dict[str, Any]) -> Check:
    """Handover (SIGTERM): the longest time no watched key changed ≤ 2 s, no key expired;
    SIGKILL: ≤ the lease TTL + 2 s. Both: the successor took over (one connection per host
    and no rollback are checks 5 and 2)."""
    ttl_s = c.cfg.lease_ttl_ms / 1000
    limits = {"handover": 2.0, "sigkill": ttl_s + 2.0}
    w = c.writes
    rows, bad = [], []
    for o in c.chaos.outages if c.chaos else []:
        if o.kind not in limits:
            continue
        if w is None or o.ended is None:
            bad.append(f"{o.kind}: no successor")
            continue
        gap = w.max_gap_between(o.began, o.ended + 2.0)
        expired = w.expired_between(o.began - 1.0, o.ended + 5.0)
        figures[f"{o.kind}_gap_s"] = round(gap, 2)
        figures[f"{o.kind}_expired"] = len(expired)
        took = c.release_s.get(o.task or "") if o.kind == "handover" else None
        rows.append(
            f"{o.kind} gap {gap:.2f} s, {len(expired)} expired"
            + (f" (the old task: SIGTERM to lease released {took:.2f} s)" if took else "")
        )
        if gap > limits[o.kind] or expired:
            bad.append(o.kind)
    kinds = {o.kind for o in (c.chaos.outages if c.chaos else [])}
    missing = [k for k in limits if k not in kinds]
    rolled = len(w.rolled_back) if w else 0
    return Check(
        f"8 handover gap ≤ 2 s, 0 expired; SIGKILL: writes back ≤ TTL + 2 s ({ttl_s + 2:g} s)",
        not bad and not missing and rolled == 0,
        "; ".join(rows)
        + f"; {rolled} rollbacks among {len(w.keys) if w else 0} keys polled every 10 ms"
        + (f"; failed: {', '.join(bad + missing)}" if bad or missing else ""),
    )


def render(checks: list[Check], recoveries: list[Recovery], figures: dict[str, Any]) -> str:
    rows = [f"{'check':<66} {'':2} figures", "-" * 100]
    rows += [f"{ch.name:<66} {'✓' if ch.ok else '✗':2} {ch.figure}" for ch in checks]
    rows += [
        "",
        f"{'outage':<16} {'host':<9} {'began':>8} {'lasted s':>9} {'resumed s':>10} "
        f"{'lag ok s':>9} {'drained s':>10}",
        "-" * 77,
    ]
    t0 = min((r.outage.began for r in recoveries), default=0.0)
    for r in recoveries:
        o = r.outage
        rows.append(
            f"{o.kind:<16} {o.host or '-':<9} {o.began - t0:8.1f} {_f(o.seconds):>9} "
            f"{_f(r.resumed_s):>10} {_f(r.lag_ok_s):>9} {_f(r.drained_s):>10}"
        )
    rows += ["", "figures: " + ", ".join(f"{k} {v}" for k, v in figures.items())]
    return "\n".join(rows)


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"
