"""``python -m bench.crash``: what a crash (SIGKILL) of the service loses, measured.

Each round runs the real service (``python -m polygon_runner run``, configured by the
environment) against the in-process simulator (wall clock, paced, ``track_latest``), a
private ``redis-server`` and moto's standalone S3 server; after a warm-up it SIGKILLs the
service, takes stock, starts a fresh service process with the same environment, lets it run
and SIGTERMs it. Per round it reports:

* archive: lines the simulator delivered to the killed process (per-connection truth) vs
  the lines of that process found in S3 at the end (``ingestTs`` before the restart; the
  restarted service's start-up recovery completes what was uploaded), per channel, also as
  seconds of feed at the channel's rate; and whether the recovered objects hold exactly the
  contiguous uploaded parts (``completable_parts``) seen in S3 right after the kill;
* Redis: keys whose value was older than the newest event delivered before the kill, and
  how long after the restart until every key is at least that new again;
* garbage: open multipart uploads and ``uploading.marker`` objects left after the second
  process stopped (there must be none), and the second process's exit code (must be 0).

Exit code 1 when a round failed (see ``Round.problems``). ``delivered`` counts what was
handed to the socket, so frames still in the kernel buffers of the killed process count as
lost: the figure is an upper bound of what the service itself dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import boto3
import msgspec
import redis

from bench.expected import bench_symbols
from bench.procs import Child, start_child, wait_port
from polygon_core.archive_policy import UploadedPart, completable_parts
from polygon_core.timestamps import iso_ms
from polygon_sim.config import SimulatorConfig
from polygon_sim.server import PolygonSimulator
from polygon_testing.local_redis import RedisServerProcess, free_port

__all__ = ["CrashConfig", "Round", "Servers", "crash_round", "main"]

API_KEY = "crash-key-3b7d"
CHANNELS = ("AM", "FMV", "T", "Q")
FAMILY = {"AM": "agg1m", "FMV": "fmv", "T": "trade", "Q": "quote"}
TIME_FIELD = {"AM": "start", "FMV": "ts", "T": "ts", "Q": "ts"}
_CHANNEL_OF = {family: channel for channel, family in FAMILY.items()}
MARKER = "uploading.marker"
SERVICE = [sys.executable, "-m", "polygon_runner", "run"]


class _Head(msgspec.Struct):
    channel: str
    ingestTs: str  # noqa: N815 - the archive's field name


_HEAD = msgspec.json.Decoder(_Head)
_RECOVERY = re.compile(
    r"S3 archive recovery: (\d+) uploads completed, (\d+) aborted, (\d+) stale markers removed"
)


@dataclass(frozen=True)
class CrashConfig:
    rate: float = 20_000.0
    """Events/s per feed host."""
    symbols: int = 2000
    warmup_s: float = 15.0
    """Streaming time before the SIGKILL."""
    after_s: float = 5.0
    """The restarted service runs at least this long (and until Redis is fresh again)."""
    fresh_timeout_s: float = 30.0
    part_size_bytes: int | None = None
    """``S3_PART_SIZE_BYTES`` (None: the service's default, 16 MiB)."""
    min_uploaded_bytes: int = 0
    """After the warm-up, also wait (up to 30 s) until S3 holds this many uploaded bytes."""


@dataclass
class Round:
    warmup_s: float = 0.0
    """Seconds the killed process streamed (both feeds authenticated) before the kill."""
    delivered: dict[str, int] = field(default_factory=dict)
    rate: dict[str, float] = field(default_factory=dict)
    """Lines/s per channel delivered to the killed process while it was connected."""
    archived: dict[str, int] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)
    lost_s: dict[str, float] = field(default_factory=dict)
    lost_bytes: dict[str, int] = field(default_factory=dict)
    uploaded_at_kill_bytes: int = 0
    bad_lines: int = 0
    """Lines in S3 that do not parse as JSON (parts end on line ends: must be 0)."""
    recovery: tuple[int, int, int] | None = None
    """The restarted service's start-up recovery: uploads completed, aborted, markers
    removed (from its log)."""
    recovered_bytes: int = 0
    keys: int = 0
    pending_at_kill: int = 0
    pending_by_channel: dict[str, int] = field(default_factory=dict)
    pending_window_ms: int = 0
    """How long before the kill the oldest unwritten newest value was delivered."""
    fresh_after_s: float | None = None
    connected_after_s: float | None = None
    restart_exit: int | None = None
    restart_delivered: int = 0
    restart_archived: int = 0
    uploads_left: int = 0
    markers_left: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class Servers:
    redis_url: str
    s3_endpoint: str
    workdir: Path

    def s3(self) -> Any:
        return boto3.client(
            "s3", region_name="us-east-1", endpoint_url=self.s3_endpoint,
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )  # fmt: skip


def service_env(servers: Servers, sim: PolygonSimulator, bucket: str, cfg: CrashConfig) -> dict:
    env = {
        "POLYGON_API_KEY": API_KEY,
        "POLYGON_WS_SYMBOLS": ",".join(sim.config.symbols),
        "POLYGON_DISCOVER_TICKERS": "false",
        "POLYGON_WS_HOST_REALTIME": sim.realtime_url,
        "POLYGON_WS_HOST_DELAYED": sim.delayed_url,
        "REDIS_URL": servers.redis_url,
        "HEALTH_PORT": "0",
        "LOG_FORMAT": "json",
        "WS_HEALTH_INTERVAL_SEC": "5",
        "SHUTDOWN_TIMEOUT_SEC": "60",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "S3_ENDPOINT_URL": servers.s3_endpoint,
        "S3_ENABLED": "true",
        "S3_BUCKET": bucket,
        "S3_PREFIX": "raw",
        "S3_HOSTNAME": "crash-host",
    }
    if cfg.part_size_bytes is not None:
        env["S3_PART_SIZE_BYTES"] = str(cfg.part_size_bytes)
    return env


# -- S3 and Redis as seen from outside ---------------------------------------------------------


def s3_state(s3: Any, bucket: str) -> tuple[dict[str, int], dict[str, list[UploadedPart]]]:
    """Completed objects (key -> size) and open uploads (key -> parts)."""
    objects: dict[str, int] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        objects.update({o["Key"]: int(o["Size"]) for o in page.get("Contents", [])})
    uploads: dict[str, list[UploadedPart]] = {}
    for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        for up in page.get("Uploads", []):
            listed = s3.list_parts(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
            parts = [
                UploadedPart(int(p["PartNumber"]), p["ETag"], int(p["Size"]))
                for p in listed.get("Parts", [])
            ]
            uploads.setdefault(up["Key"], []).extend(parts)
    return objects, uploads


def archive_lines(s3: Any, bucket: str, split_iso: str) -> tuple[dict, dict, dict, int]:
    """Lines per channel with ``ingestTs`` before / from ``split_iso``, the mean line size
    per channel, and the number of lines that do not parse as JSON (there must be none)."""
    before: dict[str, int] = dict.fromkeys(CHANNELS, 0)
    after: dict[str, int] = dict.fromkeys(CHANNELS, 0)
    nbytes: dict[str, int] = dict.fromkeys(CHANNELS, 0)
    bad = 0
    objects, _ = s3_state(s3, bucket)
    for key in objects:
        if not key.endswith(".ndjson"):
            continue
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        for line in body.split(b"\n"):
            if not line:
                continue
            try:
                head = _HEAD.decode(line)
            except msgspec.DecodeError:
                bad += 1
                continue
            nbytes[head.channel] += len(line) + 1
            if head.ingestTs < split_iso:
                before[head.channel] += 1
            else:
                after[head.channel] += 1
    mean = {ch: nbytes[ch] / max(1, before[ch] + after[ch]) for ch in CHANNELS}
    return before, after, mean, bad


def redis_times(client: redis.Redis, keys: list[str]) -> list[int | None]:
    """The event time of each key's record (None: missing)."""
    out: list[int | None] = []
    for i in range(0, len(keys), 4000):
        chunk = keys[i : i + 4000]
        for key, raw in zip(chunk, client.mget(chunk), strict=True):
            name = TIME_FIELD[_CHANNEL_OF[key.split(":")[1]]]
            out.append(None if raw is None else int(json.loads(raw)[name]))
    return out


# -- one round ---------------------------------------------------------------------------------


def _start(name: str, servers: Servers, env: dict[str, str]) -> Child:
    return start_child(name, SERVICE, servers.workdir, env)


async def _wait(child: Child, timeout_s: float) -> int | None:
    try:
        return await asyncio.to_thread(child.proc.wait, timeout_s)
    except subprocess.TimeoutExpired:
        child.proc.kill()
        await asyncio.to_thread(child.proc.wait)
        return None


async def _streaming(sim: PolygonSimulator, child: Child, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    hosts = sim.truth.hosts.values()
    while not all(h.authenticated_now == 1 and h.events for h in hosts):
        if child.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"service did not start streaming:\n{child.log_tail()}")
        await asyncio.sleep(0.05)


async def _uploaded(s3: Any, bucket: str, nbytes: int, child: Child) -> None:
    deadline = time.monotonic() + 30.0
    while nbytes > 0:
        objects, uploads = await asyncio.to_thread(s3_state, s3, bucket)
        held = sum(objects.values()) + sum(p.size for v in uploads.values() for p in v)
        if held >= nbytes:
            return
        if child.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"S3 holds only {held} bytes:\n{child.log_tail()}")
        await asyncio.sleep(0.2)


async def crash_round(cfg: CrashConfig, servers: Servers, name: str) -> Round:
    """One kill-and-restart round (see the module docstring)."""
    result = Round()
    s3 = servers.s3()
    bucket = f"crash-{uuid.uuid4().hex[:12]}"
    await asyncio.to_thread(s3.create_bucket, Bucket=bucket)
    direct = redis.Redis.from_url(servers.redis_url)
    await asyncio.to_thread(direct.flushall)
    sim_config = SimulatorConfig(
        api_key=API_KEY, symbols=bench_symbols(cfg.symbols), events_per_second=cfg.rate,
        wall_clock=True, track_latest=True, rest=False, auth_timeout_s=None,
    )  # fmt: skip
    children: list[Child] = []
    try:
        async with PolygonSimulator(sim_config) as sim:
            env = service_env(servers, sim, bucket, cfg)
            first = _start(f"{name}-killed", servers, env)
            children.append(first)
            try:
                await _streaming(sim, first, 60.0)
                streaming = time.monotonic()
                await asyncio.sleep(cfg.warmup_s)
                await _uploaded(s3, bucket, cfg.min_uploaded_bytes, first)
                # The simulator runs on this event loop: nothing is delivered between this
                # snapshot (shallow copies, tens of µs) and the SIGKILL, so it is exactly
                # what was handed to the killed process's sockets.
                conns = [c for h in sim.truth.hosts.values() for c in h.connections.values()]
                counts = [dict(c.counts) for c in conns]
                newest = [dict(h.latest) for h in sim.truth.hosts.values()]
                first.proc.kill()
                killed_ms = int(time.time() * 1000)
                result.warmup_s = time.monotonic() - streaming
            finally:
                first.proc.kill()
            _delivered(result, conns, counts, killed_ms / 1000)
            latest = {
                f"stock:{FAMILY[ch]}:{sym}": ev.time
                for host in newest
                for (ch, sym), ev in host.items()
            }
            await _wait(first, 10.0)
            deadline = time.monotonic() + 10.0
            while any(c.closed_at_s is None for c in conns) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            keys = sorted(latest)
            result.keys = len(keys)
            at_kill = await asyncio.to_thread(redis_times, direct, keys)
            _pending(result, keys, [latest[k] for k in keys], at_kill, killed_ms)
            objects, uploads = await asyncio.to_thread(s3_state, s3, bucket)
            expected = {k: sum(p.size for p in completable_parts(v)) for k, v in uploads.items()}
            expected |= objects
            result.uploaded_at_kill_bytes = sum(expected.values())

            restart_wall = time.time()
            split_iso = iso_ms(int(restart_wall * 1000))
            started = time.monotonic()
            second = _start(f"{name}-restarted", servers, env)
            children.append(second)
            try:
                result.fresh_after_s = await _fresh(
                    direct, keys, latest, started, second, cfg.fresh_timeout_s
                )
                await asyncio.sleep(max(0.0, started + cfg.after_s - time.monotonic()))
            finally:
                second.proc.send_signal(signal.SIGTERM)
            result.restart_exit = await _wait(second, 90.0)
            found = _RECOVERY.search(second.log_tail(10**7))
            if found is not None:
                result.recovery = (int(found[1]), int(found[2]), int(found[3]))
            later = [c for h in sim.truth.hosts.values() for c in h.connections.values()]
            later = [c for c in later if c not in conns]
            authed = [c.authenticated_at_s for c in later if c.authenticated_at_s is not None]
            if len(authed) == 2:
                result.connected_after_s = max(authed) - restart_wall
            result.restart_delivered = sum(c.events for c in later)

    finally:  # whatever went wrong, no service process outlives the round
        for child in children:
            if child.proc.poll() is None:
                child.proc.kill()
                child.proc.wait()

    final, left = await asyncio.to_thread(s3_state, s3, bucket)
    result.uploads_left = len(left)
    result.markers_left = sum(1 for k in final if k.endswith("/" + MARKER))
    result.recovered_bytes = sum(final.get(k, 0) for k, size in expected.items() if size)
    counted = await asyncio.to_thread(archive_lines, s3, bucket, split_iso)
    before, after, line_bytes, result.bad_lines = counted
    result.archived = before
    result.restart_archived = sum(after.values())
    for ch in CHANNELS:
        delivered = result.delivered.get(ch, 0)
        result.lost[ch] = delivered - before[ch]
        rate = result.rate.get(ch, 0.0)
        result.lost_s[ch] = result.lost[ch] / rate if rate else 0.0
        result.lost_bytes[ch] = int(result.lost[ch] * line_bytes[ch])
    _judge(result, expected, final, second.log_tail())
    return result


def _delivered(result: Round, conns: list[Any], counts: list[dict], now_s: float) -> None:
    result.delivered = dict.fromkeys(CHANNELS, 0)
    seconds: dict[str, float] = {}
    for c, by_channel in zip(conns, counts, strict=True):
        for ch, n in by_channel.items():
            result.delivered[ch] += n
            if c.authenticated_at_s is not None:
                end = c.closed_at_s if c.closed_at_s is not None else now_s
                seconds[ch] = seconds.get(ch, 0.0) + min(end, now_s) - c.authenticated_at_s
    result.rate = {ch: result.delivered[ch] / s for ch, s in seconds.items() if s > 0}


def _pending(
    result: Round, keys: list[str], truth: list[int], seen: list[int | None], killed_ms: int
) -> None:
    """Keys whose Redis value is older than the newest event delivered before the kill.

    The window uses event times, which the paced wall-clock simulator stamps with the
    send time (AM: the bar start, so AM keys are left out of it)."""
    result.pending_by_channel = dict.fromkeys(CHANNELS, 0)
    for key, want, got in zip(keys, truth, seen, strict=True):
        if got is None or got < want:
            channel = _CHANNEL_OF[key.split(":")[1]]
            result.pending_at_kill += 1
            result.pending_by_channel[channel] += 1
            if channel != "AM":
                window = killed_ms - want
                result.pending_window_ms = max(result.pending_window_ms, window)


async def _fresh(
    client: redis.Redis,
    keys: list[str],
    latest: dict[str, int],
    started: float,
    child: Child,
    timeout_s: float,
) -> float | None:
    """Seconds from the restart until every key is at least as new as at the kill."""
    waiting = list(keys)
    while waiting:
        if time.monotonic() - started > timeout_s or child.proc.poll() is not None:
            return None
        seen = await asyncio.to_thread(redis_times, client, waiting)
        waiting = [k for k, t in zip(waiting, seen, strict=True) if t is None or t < latest[k]]
        if waiting:
            await asyncio.sleep(0.05)
    return time.monotonic() - started


def _judge(result: Round, expected: dict[str, int], final: dict[str, int], log: str) -> None:
    if result.restart_exit != 0:
        result.problems.append(f"restarted service exited {result.restart_exit}:\n{log}")
    if result.uploads_left or result.markers_left:
        result.problems.append(
            f"left behind: {result.uploads_left} open uploads, {result.markers_left} markers"
        )
    if result.bad_lines:
        result.problems.append(f"{result.bad_lines} lines in S3 do not parse as JSON")
    short = [k for k, size in expected.items() if size and final.get(k, 0) < size]
    if short:
        result.problems.append(f"objects smaller than their uploaded parts at the kill: {short}")
    if any(n < 0 for n in result.lost.values()):
        result.problems.append(f"more lines archived than delivered: {result.lost}")
    if result.fresh_after_s is None:
        result.problems.append("Redis was not fresh again within the timeout")


# -- the command -------------------------------------------------------------------------------


async def run_rounds(configs: list[CrashConfig], workdir: Path) -> list[Round]:
    port = free_port()
    moto = start_child("moto", [sys.executable, "-m", "moto.server", "-p", str(port)], workdir)
    try:
        wait_port(port, 30.0, moto)
        with RedisServerProcess() as server:
            servers = Servers(server.url, f"http://127.0.0.1:{port}", workdir)
            return [
                await crash_round(cfg, servers, f"round{i + 1}") for i, cfg in enumerate(configs)
            ]
    finally:
        moto.stop()


def render(rounds: list[Round], cfg: CrashConfig) -> str:
    part = cfg.part_size_bytes or 16 * 1024 * 1024
    out = [
        f"SIGKILL at {cfg.rate:,.0f} events/s per host, {cfg.symbols} symbols, "
        f"S3 part size {part / 2**20:g} MiB; restart with the same environment",
        "",
        "S3 archive: lines delivered to the killed process vs its lines in S3 at the end",
        "round  killed after (s)  channel  delivered   archived      lost  lost (s)  lost (MiB)",
    ]
    for i, r in enumerate(rounds, 1):
        for ch in CHANNELS:
            out.append(
                f"{i:>5}  {r.warmup_s:>16.0f}  {ch:<7}  {r.delivered.get(ch, 0):>9,}  "
                f"{r.archived.get(ch, 0):>9,}  {r.lost.get(ch, 0):>8,}  "
                f"{r.lost_s.get(ch, 0.0):>8.1f}  {r.lost_bytes.get(ch, 0) / 2**20:>10.1f}"
            )
    out += [
        "",
        "S3 recovery by the restarted service, and what it left behind after its SIGTERM stop",
        "round  uploaded at kill (MiB)  in S3 after (MiB)  completed/aborted/markers  "
        "exit  open uploads  markers  unparsable lines",
    ]
    for i, r in enumerate(rounds, 1):
        recovery = "-" if r.recovery is None else "/".join(map(str, r.recovery))
        out.append(
            f"{i:>5}  {r.uploaded_at_kill_bytes / 2**20:>22.1f}  "
            f"{r.recovered_bytes / 2**20:>17.1f}  {recovery:>25}  {r.restart_exit!s:>4}  "
            f"{r.uploads_left:>12}  {r.markers_left:>7}  {r.bad_lines:>16}"
        )
    out += [
        "",
        "Redis: keys older than the newest event delivered before the kill",
        "round  keys   pending at kill  pending window (ms)  restart connected (s)  fresh (s)",
    ]
    for i, r in enumerate(rounds, 1):
        fresh = (
            "-" if r.fresh_after_s is None or not r.pending_at_kill else f"{r.fresh_after_s:.2f}"
        )
        conn = "-" if r.connected_after_s is None else f"{r.connected_after_s:.2f}"
        out.append(
            f"{i:>5}  {r.keys:>5,}  {r.pending_at_kill:>15,}  {r.pending_window_ms:>19,}  "
            f"{conn:>21}  {fresh:>9}"
        )
    out.append("")
    for i, r in enumerate(rounds, 1):
        out.append(
            f"round {i}: the restarted process archived {r.restart_archived:,} of the "
            f"{r.restart_delivered:,} lines delivered to it (SIGTERM stop); "
            + ("ok" if not r.problems else "FAILED: " + "; ".join(r.problems))
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.crash", description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rate", type=float, default=20_000.0, help="events/s per host")
    parser.add_argument("--symbols", type=int, default=2000)
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds before the kill")
    parser.add_argument(
        "--warmup-step", type=float, default=4.0, help="added to --warmup each round"
    )
    parser.add_argument("--after", type=float, default=5.0, help="seconds the restart runs")
    parser.add_argument("--part-size", type=int, default=None, help="S3_PART_SIZE_BYTES")
    parser.add_argument("--json", type=Path, default=None, help="also write the rounds here")
    args = parser.parse_args(argv)
    configs = [
        CrashConfig(
            args.rate,
            args.symbols,
            args.warmup + i * args.warmup_step,
            args.after,
            30.0,
            args.part_size,
        )  # fmt: skip
        for i in range(args.repeat)
    ]
    with tempfile.TemporaryDirectory(prefix="crash-") as tmp:
        rounds = asyncio.run(run_rounds(configs, Path(tmp)))
    print(render(rounds, configs[0]))
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in rounds], indent=2))
    return 1 if any(r.problems for r in rounds) else 0


if __name__ == "__main__":
    sys.exit(main())
