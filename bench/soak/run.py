"""One soak run, start to finish: start the world, warm up, run the chaos schedule while the
observers watch, settle, stop the feed, take the final state, SIGTERM the service, read the
archive back. :mod:`bench.soak.verdict` judges what this collects."""

from __future__ import annotations

import asyncio
import bisect
import calendar
import contextlib
import json
import shutil
import signal
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bench.expected import KEY_PREFIX, wire_record_values
from bench.service_task import WriteWatcher
from bench.soak.chaos import Chaos, Outage
from bench.soak.observe import MetricsPoller, RollbackWatcher, RssSampler, Sample
from bench.soak.plan import COOLDOWN_S, Fault, SoakConfig, schedule
from bench.soak.world import BUCKET, PREFIX, TTL_S, World

__all__ = ["Collected", "run_soak"]

QUIET_S = 1.0
"""After the feed stops, the service's counters must hold still this long."""
RSS_WINDOW_S = 10.0
"""Memory is compared over this long at the end of the warm-up and of the settle phase
(both must be at least this long); see :func:`_rss_level`."""


@dataclass
class Collected:
    """Everything the verdict needs; plain data."""

    cfg: SoakConfig
    workdir: Path
    plan: list[Fault]
    chaos: Chaos | None = None
    poller: MetricsPoller | None = None
    watcher: RollbackWatcher | None = None
    rss: RssSampler | None = None
    writes: WriteWatcher | None = None
    """A few hundred keys polled every 10 ms: write gaps and expiries at a handover."""
    window: tuple[float, float] = (0.0, 0.0)
    """``time.time()`` at the start and end of the chaos window."""
    rss_start: int = 0
    rss_end: int = 0
    """The memory not held by the archive's buffers at the end of the warm-up and of the
    settle phase (:func:`_rss_level`)."""
    rss_peak_start: int = 0
    rss_peak_end: int = 0
    """The highest RSS sampled in the same windows (for the record)."""
    final: Sample | None = None
    start_outage: Outage | None = None
    """S3 down at start (``SoakConfig.s3_down_at_start_s``): the spawn to the proxy back."""
    first_write_s: float | None = None
    """Seconds from spawning the service to the first key in Redis."""
    delivered: dict[str, int] = field(default_factory=dict)
    connections: dict[str, dict[str, Any]] = field(default_factory=dict)
    redis_mismatches: list[str] = field(default_factory=list)
    redis_checked: int = 0
    redis_expired: int = 0
    exit_code: int | None = None
    stop_seconds: float | None = None
    archive_lines: dict[str, int] = field(default_factory=dict)
    archive_by_task: dict[str, dict[str, int]] = field(default_factory=dict)
    """Lines in S3 per task (its hostname ``soak-<task>``) and channel."""
    appended_by_task: dict[str, dict[str, int]] = field(default_factory=dict)
    """``polygon_archive_lines_appended`` per task and channel, as each last answered."""
    killed: list[str] = field(default_factory=list)
    """Tasks SIGKILLed by the schedule (their unuploaded tail is lost, as in a crash)."""
    terms: int = 0
    """Times a task took the leader lease (each opens both feeds once); 1 without HA."""
    fences: int = 0
    """Times a task lost the lease or could not renew it (it dropped both feeds)."""
    others_recovered: list[float] = field(default_factory=list)
    """``time.time()`` of each "S3 archive recovery (other writers' uploads)" line."""
    release_s: dict[str, float] = field(default_factory=dict)
    """Per task that released the lease: seconds from its "stopping" line to "leader lease
    released" (stop reading, write what is pending: the predecessor's part of a handover)."""
    open_uploads: int = 0
    open_uploads_by_task: dict[str, int] = field(default_factory=dict)
    stopped_at: float = 0.0
    """``time.time()`` of the final SIGTERM."""
    markers: int = 0
    leaked: list[str] = field(default_factory=list)
    log_lines: int = 0
    fatal: str | None = None


async def run_soak(cfg: SoakConfig, progress: Any = print) -> Collected:
    plan = schedule(cfg)
    workdir = _workdir(cfg)
    out = Collected(cfg, workdir, plan)
    world = World(cfg, workdir)
    tasks: list[asyncio.Task[None]] = []
    try:
        progress(f"soak: starting (logs in {workdir})")
        await world.start()
        starting = asyncio.create_task(_s3_down_at_start(world, out))
        await world.wait_healthy(60.0)
        assert world.service is not None
        out.poller = MetricsPoller(world)
        out.watcher = RollbackWatcher(world, world.symbols)
        out.rss = RssSampler(world)
        out.writes = WriteWatcher(world.redis_url, _watched_keys(world), 0.01, time.time)
        observers = (out.poller, out.watcher, out.rss, out.writes)
        tasks = [asyncio.create_task(o.run()) for o in observers]
        progress(f"soak: warming up {cfg.warmup_s:.0f} s")
        await asyncio.sleep(cfg.warmup_s)
        await _while_alive(world, starting)
        out.rss_start, out.rss_peak_start = _rss_level(out)
        out.chaos = Chaos(world)
        if out.start_outage is not None:
            out.chaos.outages.append(out.start_outage)
        started = time.monotonic()
        out.window = (time.time(), 0.0)
        outages = sum(f.outage for f in plan)
        progress(f"soak: chaos for {cfg.duration_s:.0f} s, {outages} outages, {len(plan)} faults")
        chaos = asyncio.create_task(out.chaos.run(plan, started))
        await _while_alive(world, chaos)
        out.window = (out.window[0], time.time())
        progress(f"soak: settling {cfg.settle_s:.0f} s")
        await _while_alive(world, asyncio.create_task(asyncio.sleep(cfg.settle_s)))
        out.rss_end, out.rss_peak_end = _rss_level(out)
        await _quiesce(world, out.poller)
        out.final = out.poller.latest()
        _take_truth(world, out)
        await _check_redis(world, out)
        progress("soak: SIGTERM")
        await _stop_service(world, out)
    except Exception as exc:
        out.fatal = f"{type(exc).__name__}: {exc}"
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if out.exit_code is None and world.service is not None:
            out.exit_code = world.service.returncode
        with contextlib.suppress(Exception):
            await _read_archive(world, out)
        _write_timeline(out)
        _scan_logs(world, out)
        await world.close()
    return out


async def _s3_down_at_start(world: World, out: Collected) -> None:
    """Time the first Redis write while S3 is down, then bring S3 back."""
    began = world.service_started
    client = aioredis.Redis.from_url(world.redis_url)
    try:
        while not await client.dbsize():
            if time.time() - began > 60:
                raise TimeoutError("no Redis write within 60 s of the start")
            await asyncio.sleep(0.005)
        out.first_write_s = round(time.time() - began, 2)
    finally:
        await client.aclose()
    down_s = world.cfg.s3_down_at_start_s
    if down_s <= 0 or world.proxy is None:
        return
    await asyncio.sleep(max(0.0, began + down_s - time.time()))
    await world.proxy.up()
    out.start_outage = Outage("s3_down_at_start", None, began, time.time())


def _workdir(cfg: SoakConfig) -> Path:
    workdir = Path(cfg.workdir or tempfile.mkdtemp(prefix="soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


def _watched_keys(world: World) -> list[str]:
    """Trade, quote and FMV keys of the first 20 symbols (each changing several times a
    second; few enough that polling them costs the soak's process little)."""
    return [KEY_PREFIX[c] + s for s in world.symbols[:20] for c in ("T", "Q", "FMV")]


async def _while_alive(world: World, task: asyncio.Task[Any]) -> None:
    """Wait for ``task``; fail at once if a task the schedule did not stop dies meanwhile."""
    while not task.done():
        for t in world.tasks:
            code = t.proc.returncode
            if code is not None and t.name not in world.stopping:
                task.cancel()
                raise RuntimeError(f"the service (task {t.name}) died (exit code {code})")
        await asyncio.wait({task}, timeout=0.2)
    task.result()


async def _quiesce(world: World, poller: MetricsPoller) -> None:
    """Stop the feed (no more data events) and wait until the service has written all."""
    world.sim.remaining = 0
    deadline = time.monotonic() + COOLDOWN_S

    def state(s: Sample) -> tuple[float, ...]:
        events = sum(s.events(c) for c in KEY_PREFIX)
        return (events, s.get("polygon_redis_writes_total"), s.get("polygon_pending_keys"))

    stable_since, last = time.monotonic(), state(poller.latest())
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        now = state(poller.latest())
        if now != last:
            stable_since, last = time.monotonic(), now
        elif now[2] == 0 and time.monotonic() - stable_since >= QUIET_S:
            return
    raise TimeoutError("the service did not go quiet after the feed stopped")


def _take_truth(world: World, out: Collected) -> None:
    assert out.poller is not None
    for name, page in out.poller.per_task.items():
        out.appended_by_task[name] = {
            c: int(page.get(f'polygon_archive_lines_appended{{channel="{c}"}}', 0))
            for c in KEY_PREFIX
        }
    out.killed = (
        [o.task for o in out.chaos.outages if o.kind == "sigkill" and o.task] if out.chaos else []
    )
    for role, host in world.sim.truth.hosts.items():
        conns = list(host.connections.values())
        out.delivered |= dict(host.counts)
        out.connections[role.value] = {
            "authenticated": sum(c.authenticated_at_s is not None for c in conns),
            "opened": len(conns),
            "max_authenticated": host.max_authenticated,
            "max_open": _max_overlap([(c.opened_at_s, c.closed_at_s) for c in conns]),
        }


def _max_overlap(spans: list[tuple[float, float | None]]) -> int:
    edges = sorted(
        [(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans if b is not None],
        key=lambda e: (e[0], e[1]),
    )
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def may_have_expired(age_ms: float, ttl_s: int) -> bool:
    """Whether a key may be gone by its TTL: its newest event was made ``age_ms`` before
    the end of the read that found it missing. The key was written no earlier than the
    event was made (the simulator sends no event from the future), so it expired no
    earlier than the event time + TTL. ``age_ms`` must be taken after the read: taken
    once before reading thousands of keys, it undercounted the age of keys read last,
    and keys that had just expired were called missing (two HA soaks of 2026-12-03, 9
    and 16 keys, each 59.8-60.0 s old by the early clock)."""
    return age_ms >= ttl_s * 1000


async def _check_redis(world: World, out: Collected) -> None:
    """Every key holds the newest delivered event's record, with a TTL in [0, configured]
    (``PTTL``, in ms; 0 is a key in its last millisecond, read just before it expired);
    a missing key is accepted only when its TTL would have run out by now."""
    latest = [e for h in world.sim.truth.hosts.values() for e in h.latest.values()]
    client = aioredis.Redis.from_url(world.redis_url)
    try:
        for start in range(0, len(latest), 1000):
            part = latest[start : start + 1000]
            pipe = client.pipeline(transaction=False)
            for e in part:
                key = KEY_PREFIX[e.channel] + e.symbol
                pipe.get(key)
                pipe.pttl(key)  # ms: TTL's seconds round to the nearest, 0 for < 0.5 s
            replies = await pipe.execute()
            now_ms = time.time() * 1000  # no GET of this pipeline ran later than this
            for i, e in enumerate(part):
                raw, ttl_ms = replies[2 * i], replies[2 * i + 1]
                key = KEY_PREFIX[e.channel] + e.symbol
                out.redis_checked += 1
                limit = TTL_S[e.channel]
                if raw is None:
                    age_ms = now_ms - e.time - (60_000 if e.channel == "AM" else 0)
                    if may_have_expired(age_ms, limit):
                        out.redis_expired += 1
                    else:  # when the newest event was made, for the diagnosis
                        made = time.strftime("%H:%M:%S", time.gmtime(e.time / 1000))
                        out.redis_mismatches.append(
                            f"{key}: missing (newest event t={e.time} {made}Z, "
                            f"{age_ms / 1000:.1f} s old)"
                        )
                    continue
                values = list(json.loads(raw).values())[:-1]
                expected = wire_record_values(e.channel, json.loads(e.raw))
                if values != expected:
                    out.redis_mismatches.append(f"{key}: {values} != {expected}")
                elif not 0 <= ttl_ms <= limit * 1000:  # 0: in its last ms, TTL was set
                    out.redis_mismatches.append(f"{key}: PTTL {ttl_ms} not in [0, {limit}000]")
    finally:
        await client.aclose()
    if out.redis_mismatches:  # all of them, for the diagnosis (the verdict shows the first)
        (out.workdir / "redis_mismatches.txt").write_text("\n".join(out.redis_mismatches) + "\n")


async def _stop_service(world: World, out: Collected) -> None:
    assert world.service is not None
    began = time.monotonic()
    out.stopped_at = time.time()
    for task in world.tasks:  # the active one (a standby too, had the schedule left one)
        if task.proc.returncode is None:
            task.proc.send_signal(signal.SIGTERM)
    try:
        limit_s = world.cfg.shutdown_timeout_s + 10
        out.exit_code = await asyncio.wait_for(world.service.wait(), limit_s)
    except TimeoutError:
        out.exit_code = None
    out.stop_seconds = time.monotonic() - began


async def _read_archive(world: World, out: Collected) -> None:
    s3 = world.s3()

    def read() -> None:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX + "/")
        for page in pages:
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if key.endswith("uploading.marker"):
                    out.markers += 1
                    continue
                channel = key.split("channel=", 1)[1].split("/", 1)[0]
                task = key.rpartition("/")[2].rpartition("-seq=")[0].removeprefix("soak-")
                body = s3.get_object(Bucket=BUCKET, Key=key)["Body"]
                lines = sum(chunk.count(b"\n") for chunk in body.iter_chunks(1 << 20))
                out.archive_lines[channel] = out.archive_lines.get(channel, 0) + lines
                mine = out.archive_by_task.setdefault(task, {})
                mine[channel] = mine.get(channel, 0) + lines
        uploads = s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
        out.open_uploads = len(uploads)
        for upload in uploads:
            task = upload["Key"].rpartition("/")[2].rpartition("-seq=")[0].removeprefix("soak-")
            out.open_uploads_by_task[task] = out.open_uploads_by_task.get(task, 0) + 1

    await asyncio.to_thread(read)


def _scan_logs(world: World, out: Collected) -> None:
    texts = []
    for task in world.tasks:
        with contextlib.suppress(OSError):
            texts.append(task.log.read_text(errors="replace"))
            if (took := _release_s(texts[-1])) is not None:
                out.release_s[task.name] = took
            out.others_recovered += [
                _log_time(line)
                for line in texts[-1].splitlines()
                if "recovery (other writers' uploads)" in line
            ]
    text = "\n".join(texts)
    out.log_lines = text.count("\n")
    out.leaked = [name for name, secret in world.secrets.items() if secret in text]
    out.terms = text.count('"event":"lease_acquired"') if world.cfg.ha else 1
    out.fences = text.count('"event":"lease_lost"')


def _log_time(line: str) -> float:
    """``time.time()`` of a JSON log line (its ``ts``, UTC)."""
    ts = json.loads(line)["ts"]
    return calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) + float(ts[19:-1])


def _release_s(log: str) -> float | None:
    stopping = released = None
    for line in log.splitlines():
        if '"msg":"stopping:' in line or '"event":"lease_released"' in line:
            with contextlib.suppress(ValueError, KeyError):
                at = _log_time(line)
                if "lease_released" in line:
                    released = at
                elif stopping is None:  # the first (later ones say what went wrong)
                    stopping = at
    if stopping is None or released is None:
        return None
    return round(released - stopping, 2)


def remove_workdir(out: Collected) -> None:
    if out.cfg.workdir is None:
        shutil.rmtree(out.workdir, ignore_errors=True)


def _rss_level(out: Collected) -> tuple[int, int]:
    """(median, peak) over the last ``RSS_WINDOW_S`` of the RSS less the archive's buffered
    bytes at that moment (its scrape just before). The part buffers fill and empty at the
    rate of each channel (a quiet channel holds a part for minutes: the realistic market's
    after-hours hold more than its open), within the archive's budget; what is left, the
    memory the service holds otherwise, must not grow. A buffer emptied but not given back
    shows as growth."""
    assert out.rss is not None and out.poller is not None
    end = time.time()
    scrapes = [s for s in out.poller.samples if s.at <= end]
    times = [s.at for s in scrapes]
    levels: list[int] = []
    peak = 0
    for at, rss in out.rss.samples:
        if end - RSS_WINDOW_S <= at <= end:
            i = bisect.bisect_right(times, at)
            buffered = scrapes[i - 1].get("polygon_archive_bytes_buffered") if i else 0.0
            levels.append(rss - int(buffered))
            peak = max(peak, rss)
    return (int(statistics.median(levels)) if levels else 0), peak


def _write_timeline(out: Collected) -> None:
    """``timeline.jsonl`` in the work directory: lag, writes, archive buffer and parts, RSS
    per scrape, then one line per outage (kind, host, the task a takeover stopped, began,
    ended)."""
    if out.poller is None:
        return
    samples = out.rss.samples if out.rss else []  # (time, rss), in time order
    times = [t for t, _ in samples]
    with (out.workdir / "timeline.jsonl").open("w") as f:
        for s in out.poller.samples:
            i = bisect.bisect_right(times, s.at)
            item = {
                "t": round(s.at, 3),
                "lag": {c: s.lag(c) for c in KEY_PREFIX},
                "writes": s.get("polygon_redis_writes_total"),
                "archive_buffered": s.get("polygon_archive_bytes_buffered"),
                "archive_parts": s.get("polygon_archive_parts_uploaded"),
                "rss": samples[i - 1][1] if i else None,
            }
            f.write(json.dumps(item) + "\n")
        for o in out.chaos.outages if out.chaos else []:
            f.write(json.dumps({"outage": o.kind, "host": o.host, "task": o.task,
                                "began": o.began, "ended": o.ended}) + "\n")  # fmt: skip
