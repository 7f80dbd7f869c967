"""The soak's settings and its chaos schedule: seeded, pure, decided before the run starts.

Faults come in two kinds. *Outages* (Redis down, a Redis failover, S3 down, a WebSocket
drop, a silent feed, a handover, a SIGKILL failover, an eviction, an ``auth_failed``
burst) take something away for a while; they never
overlap, so each one's recovery is measured on its own. *Bad frames* (garbage, oversize,
out-of-order) are armed at random times over the whole window, outages or not.

An eviction or an ``auth_failed`` answer makes the service wait its long cooldown (60 s,
SPEC §4) before it reconnects. A window too short to hold those one after the other
(under ``LONG_FAULTS_MIN_S``) ends with a *finale* instead: an eviction on the delayed host
and the ``auth_failed`` burst on the real-time host at the same moment, both cooldowns
running out in the settle phase.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["COOLDOWN_S", "HOLD_S", "Fault", "SoakConfig", "schedule"]

COOLDOWN_S = 60.0
"""The service's cooldown after ``max_connections`` and ``auth_failed`` (SPEC §4)."""
RECONNECT_RESERVE_S = 6.0
"""Time kept free after a drop: the reconnect backoff (≤ 1 s) and the 2 s recovery check."""
SILENT_RESERVE_S = 10.0 + RECONNECT_RESERVE_S
"""A silent connection: found within the service's ``WS_IDLE_TIMEOUT_SEC`` (10 s), then the
reconnect and the recovery check."""
STANDBY_START_S = 15.0
"""A handover or a SIGKILL failover first starts the standby (a Python process importing
the service, on a loaded machine: seconds), then stops the active."""
HOLD_S = 5.0
"""After an outage, lag must stay normal this long to count as recovered (check 3); the
next outage waits until that recovery has been judged (``chaos.Chaos``)."""
LONG_FAULTS_MIN_S = 300.0
HOSTS = ("realtime", "delayed")


@dataclass(frozen=True)
class SoakConfig:
    duration_s: float = 600.0
    """The chaos window (the run also has a warm-up before and a settle phase after)."""
    rate: float | None = None
    """``flat``: events per second, both hosts together (``None``: 50,000). ``realistic``:
    trades + quotes per second at midday (``None``: 12,000; the open bursts to 4x that)."""
    symbols: int = 2_000
    market: str = "realistic"
    """The simulator's market: ``realistic`` (skewed activity, one AM per symbol-minute,
    the session clock, see ``polygon_sim.realistic``) or ``flat`` (``rate`` split evenly
    over the two hosts and the symbols, the steady full-throttle stress of the CI run)."""
    session_speed: float = 60.0
    """Realistic market: the trading day runs this many times faster, from the open. At
    60x a 10-minute soak passes the open burst, midday, the close and the quiet
    after-hours (4:00 pm falls about 6.5 minutes in), so bursts and lulls both meet faults."""
    seed: int = 1
    outage_s: float = 30.0
    """How long Redis and S3 stay down."""
    warmup_s: float = 20.0
    """At least ``run.RSS_WINDOW_S`` (the RSS baseline is taken over its last 10 s)."""
    settle_s: float = 20.0
    """Data keeps flowing this long after the last outage ended, before the final checks."""
    recovery_limit_s: float = 2.0
    """Writes resume and lag is back to normal within this long after an outage ends."""
    s3_resume_limit_s: float = 5.0
    """An S3 outage's "writes resume" (the first part uploaded after it) within this long.
    That part waits for S3 itself: after the start-up outage, recovery's 20 listings, then
    a CreateMultipartUpload and a marker per object, all answered by moto, a Python server
    that runs niced beside the service on the same two cores (``world.S3_NICE``), so on a
    saturated machine the time is moto's. Lag (the hot path) keeps ``recovery_limit_s``."""
    lag_ok_s: float = 1.0
    """Lag at or under this is "normal" (T, Q and FMV; AM's lag follows bar ends)."""
    rss_growth_limit: float = 0.10
    part_size_bytes: int | None = None
    """``S3_PART_SIZE_BYTES`` for the service (``None``: its default, 16 MiB). The CI run
    uses 5 MiB: the part buffers' fill-and-upload cycle is most of the RSS noise, and
    smaller parts keep a short run's RSS comparison steady."""
    s3_down_at_start_s: float = 5.0
    """S3 (the proxy) is down when the service starts and comes back this long after it was
    spawned (0: up from the start). Redis must be written meanwhile, and the archive must
    catch up; it ends before the warm-up's RSS baseline window."""
    redis_failover: bool = True
    """Include managed-Redis failovers (needs a writable /etc/hosts: the name moves)."""
    ha: bool = True
    """Run the service with ``HA_ENABLED=true`` and include a handover (a standby started,
    the active SIGTERMed) and a SIGKILL failover (a standby started, the active SIGKILLed).
    The default: the 10-minute soak is also the HA soak. ``--no-ha``: the single-task mode
    (the service's default), without those two; the CI window runs that mode."""
    lease_ttl_ms: int = 5000
    """``HA_LEASE_TTL_MS`` (the service's default)."""
    shutdown_timeout_s: float = 90.0
    """``SHUTDOWN_TIMEOUT_SEC``. With HA it is also how long a task that took over waits
    before it finishes other writers' open uploads (a killed task's are finished only by
    a task active that long)."""
    drops: int = 0
    """WebSocket drops (half clean, half abrupt); 0: one per 75 s of window, at least 2."""
    workdir: str | None = None
    """Where logs go (kept); ``None``: a temporary directory, removed after a clean run."""

    @property
    def events_per_second(self) -> float:
        """``rate`` or the market's default (see ``rate``)."""
        if self.rate is not None:
            return self.rate
        return 12_000.0 if self.market == "realistic" else 50_000.0

    def drop_count(self) -> int:
        return self.drops or max(2, int(self.duration_s // 75))


@dataclass(frozen=True)
class Fault:
    at_s: float
    """Offset from the start of the chaos window."""
    kind: str
    """``redis_down``, ``redis_failover``, ``s3_down``, ``drop``, ``drop_abrupt``,
    ``feed_silent``, ``handover``, ``sigkill``, ``evict``, ``auth_burst``, ``garbage``,
    ``oversize`` or ``out_of_order``
    (and ``s3_down_at_start``, not scheduled: see ``SoakConfig.s3_down_at_start_s``)."""
    host: str | None = None
    params: dict[str, object] = field(default_factory=dict)
    reserve_s: float = 0.0
    """How long the outage keeps the window busy (0 for bad frames)."""

    @property
    def outage(self) -> bool:
        return self.reserve_s > 0


def _outages(cfg: SoakConfig, rng: random.Random) -> tuple[list[Fault], list[Fault]]:
    """The outages to spread over the window, and the finale (empty for long windows)."""
    outage = cfg.outage_s + RECONNECT_RESERVE_S
    faults = [
        Fault(0, "redis_down", reserve_s=outage, params={"down_s": cfg.outage_s}),
        Fault(0, "s3_down", reserve_s=outage, params={"down_s": cfg.outage_s}),
        Fault(0, "feed_silent", "delayed", reserve_s=SILENT_RESERVE_S),
    ]
    if cfg.redis_failover:
        faults.append(Fault(0, "redis_failover", reserve_s=RECONNECT_RESERVE_S))
    if cfg.ha:
        ttl_s = cfg.lease_ttl_ms / 1000
        faults += [
            Fault(0, "handover", reserve_s=STANDBY_START_S + RECONNECT_RESERVE_S),
            Fault(0, "sigkill", reserve_s=STANDBY_START_S + ttl_s + RECONNECT_RESERVE_S),
        ]
    for i in range(cfg.drop_count()):
        kind = "drop" if i % 2 == 0 else "drop_abrupt"
        faults.append(Fault(0, kind, rng.choice(HOSTS), reserve_s=RECONNECT_RESERVE_S))
    long_faults = [
        Fault(0, "evict", "delayed", reserve_s=COOLDOWN_S + RECONNECT_RESERVE_S),
        Fault(0, "auth_burst", "realtime", {"attempts": 1}, COOLDOWN_S + RECONNECT_RESERVE_S),
    ]
    if cfg.duration_s >= LONG_FAULTS_MIN_S:
        faults += [
            long_faults[0],
            Fault(0, "evict", "realtime", reserve_s=COOLDOWN_S + RECONNECT_RESERVE_S),
            Fault(0, "auth_burst", "realtime", {"attempts": 2}, 2 * COOLDOWN_S + 10.0),
        ]
        return faults, []
    return faults, long_faults


def schedule(cfg: SoakConfig) -> list[Fault]:
    """Every fault of the run, by time. Raises ``ValueError`` when the outages do not fit."""
    rng = random.Random(cfg.seed)
    outages, finale = _outages(cfg, rng)
    rng.shuffle(outages)
    busy = sum(f.reserve_s for f in outages)
    free = cfg.duration_s - busy
    if free < 0:
        raise ValueError(
            f"the outages need {busy:.0f} s; raise the duration above {cfg.duration_s:.0f} s "
            "or shorten --outage"
        )
    cuts = sorted(rng.uniform(0, free) for _ in outages)
    planned: list[Fault] = []
    at = 0.0
    previous_cut = 0.0
    for fault, cut in zip(outages, cuts, strict=True):
        at += cut - previous_cut
        previous_cut = cut
        planned.append(Fault(round(at, 3), fault.kind, fault.host, fault.params, fault.reserve_s))
        at += fault.reserve_s
    for fault in finale:
        planned.append(Fault(cfg.duration_s, fault.kind, fault.host, fault.params, fault.reserve_s))
    planned += _bad_frames(cfg, rng)
    return sorted(planned, key=lambda f: (f.at_s, f.kind))


def _bad_frames(cfg: SoakConfig, rng: random.Random) -> list[Fault]:
    out: list[Fault] = []
    window = cfg.duration_s

    def spread(kind: str, every_s: float, **params: object) -> None:
        for _ in range(max(1, int(window // every_s))):
            at = round(rng.uniform(0, window), 3)
            out.append(Fault(at, kind, rng.choice(HOSTS), dict(params)))

    for garbage in ("invalid_json", "non_array", "nan", "invalid_utf8", "unknown_ev", "ill_typed"):
        spread("garbage", 60.0, garbage=garbage)
    spread("oversize", 120.0, size_bytes=2 * 1024 * 1024)
    spread("out_of_order", 30.0, count=5)
    return out
