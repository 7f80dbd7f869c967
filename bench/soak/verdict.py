"""The soak's judgement: the seven checks of issue 8, each with its figure, and the tables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.soak.chaos import Outage
from bench.soak.observe import MetricsPoller, Sample
from bench.soak.plan import COOLDOWN_S
from bench.soak.run import Collected
from bench.soak.world import SHUTDOWN_TIMEOUT_S
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


HOLD_S = 5.0


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
    if o.kind in ("redis_down", "redis_failover"):
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


def _max_calm_lag(c: Collected, limit_s: float) -> float:
    """The largest lag seen outside outages (and their allowed recovery time)."""
    assert c.poller is not None and c.chaos is not None
    spans = [(o.began, (o.ended or o.began) + limit_s) for o in c.chaos.outages]
    worst = 0.0
    for s in c.poller.samples:
        if c.window[0] <= s.at <= c.window[1] and not any(a <= s.at <= b for a, b in spans):
            worst = max(worst, *(s.lag(ch) for ch in ALL_LAG))
    return worst


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
            c.fatal is None and c.exit_code == 0 and (c.stop_seconds or 1e9) <= SHUTDOWN_TIMEOUT_S,
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

    recoveries = (
        [recovery(o, c.poller, cfg.lag_ok_s) for o in c.chaos.outages]
        if (c.chaos and c.poller)
        else []
    )
    slow = [r for r in recoveries if not r.within(cfg.recovery_limit_s, cfg.s3_resume_limit_s)]
    worst = max((r.resumed_s or 0.0 for r in recoveries), default=0.0)
    worst_lag = max((r.lag_ok_s or 0.0 for r in recoveries), default=0.0)
    checks.append(
        Check(
            f"3 writes resume, lag normal ≤ {cfg.recovery_limit_s:g} s after each outage "
            f"(S3 parts ≤ {cfg.s3_resume_limit_s:g} s)",
            bool(recoveries) and not slow,
            f"{len(recoveries)} outages, resume ≤ {worst:.2f} s, lag ≤ {worst_lag:.2f} s"
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
    wrong = {
        ch: (c.archive_lines.get(ch, 0), appended[ch])
        for ch in channels
        if c.archive_lines.get(ch, 0) != appended[ch]
    }
    checks.append(
        Check(
            "4 archive = every line accepted; no drop, upload or marker left",
            not wrong
            and not sum(dropped.values())
            and not lost
            and not c.open_uploads
            and not c.markers
            and min(extra.values()) >= 0
            and sum(extra.values()) <= rejects,
            f"{sum(c.archive_lines.values())} lines = {sum(events.values())} events + "
            f"{sum(extra.values())} rejected elements; dropped {sum(dropped.values())}, "
            f"lost {lost}, open uploads {c.open_uploads}, markers {c.markers}"
            + (f"; (in S3, accepted) differ: {wrong}" if wrong else ""),
        )
    )
    abrupt_hosts = {
        o.host
        for o in (c.chaos.outages if c.chaos else [])
        if o.kind in ("drop_abrupt", "feed_silent")  # what was sent into the silence is lost
    }
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
        if info["authenticated"] - 1 != kills.get(host, 0):
            conn_problems.append(
                f"{host}: {info['authenticated'] - 1} reconnects for {kills.get(host, 0)} drops"
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
                f"{h}: {i['authenticated'] - 1} reconnects / {kills.get(h, 0)} drops"
                for h, i in c.connections.items()
            )
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
    if c.chaos and c.chaos.errors:
        checks.append(Check("chaos schedule carried out", False, "; ".join(c.chaos.errors)))

    figures |= {
        "events_delivered": sum(c.delivered.values()),
        "events_received": sum(events.values()),
        "outages": len(recoveries),
        "first_redis_write_s": c.first_write_s,
        "reconnects": {h: i["authenticated"] - 1 for h, i in c.connections.items()},
        "max_lag_calm_s": round(_max_calm_lag(c, cfg.recovery_limit_s), 3)
        if c.poller and c.chaos
        else None,
        "rss_start_mb": round(c.rss_start / 2**20, 1),
        "rss_end_mb": round(c.rss_end / 2**20, 1),
        "rss_peak_start_mb": round(c.rss_peak_start / 2**20, 1),
        "rss_peak_end_mb": round(c.rss_peak_end / 2**20, 1),
        "rss_peak_mb": round((c.rss.peak if c.rss else 0) / 2**20, 1),
        "archive_dropped": sum(dropped.values()),
        "late_dropped": int(final.get("polygon_late_dropped_total")),
        "rejects": rejects,
        "bad_frames": dict(c.chaos.bad_frames) if c.chaos else {},
        "redis_flush_failures": int(final.get("polygon_redis_flush_failures_total")),
    }
    return checks, recoveries, figures


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
