"""One run of one workload: start the servers, run the client under test, measure, check.

The measured interval starts when the first write reaches Redis (``DBSIZE`` polled every
1 ms after the client starts, so start-up, imports and the handshake are left out; the
first flush, about one flush interval of events, falls before it) and ends as
:mod:`bench.checks` describes. CPU (client, simulators, Redis, driver, machine), Redis
commands and the time are read at both ends.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import time
from pathlib import Path

from bench.checks import check_sink, latencies, until_drained, until_final, until_written
from bench.context import API_KEY, SEED, RunContext, RunResult
from bench.expected import KEY_PREFIX, Expected, replay
from bench.probe import LatencySampler, RedisProbe, scrape_metrics
from bench.procs import ROOT, Child, cpu_seconds
from bench.services import SHUTDOWN_S, sink_env
from bench.workloads import Workload
from polygon_sim.stamps import read_frame_log
from polygon_testing.local_redis import RedisServerProcess

__all__ = ["RunResult", "run_once"]

LATENCY_SAMPLE_SYMBOLS = 25


@functools.lru_cache(maxsize=4)
def _expected(symbols: tuple[str, ...], seed: int, realtime: int, delayed: int) -> Expected:
    return replay(symbols, seed, {"realtime": realtime, "delayed": delayed})


def run_once(w: Workload, workdir: Path) -> RunResult:
    """Run ``w`` once in ``workdir`` (logs stay there); never raises for a failed run."""
    with contextlib.ExitStack() as stack:
        run = RunContext(w, workdir, stack)
        try:
            if w.client == "null":
                _null(run)
            else:
                _measured(run)
        except Exception as exc:  # a broken run is reported, the others still run
            run.result.fail(f"{type(exc).__name__}: {exc}")
        return run.result


def _null(run: RunContext) -> None:
    urls = run.start_feeds()
    before = {n: cpu_seconds(p) for n, p in run.pids.items()}
    argv = [sys.executable, "-m", "bench.null_client", "--events", str(run.w.events)]
    argv += ["--roles", *urls, "--urls", *urls.values()]
    child = run.child("null", argv, {"SIMULATOR_API_KEY": API_KEY}, capture_stdout=True)
    out, _ = child.proc.communicate(timeout=120 + run.w.events / 20_000)
    spent = {n: cpu_seconds(p) - before[n] for n, p in run.pids.items()}
    report = json.loads(out.decode().strip().splitlines()[-1])
    r = run.result
    r.events, r.seconds = report["events"], report["seconds"]
    r.cpu_s = sum(spent.values())
    r.extra["cpu_s"] = {**{k: round(v, 3) for k, v in spent.items()}, "null": report["cpu_s"]}
    if r.seconds > 0:  # the simulators do nothing but stream here
        r.extra["cores"] = {"feed": round(r.cpu_s / r.seconds, 2)}
    if r.events < run.w.events:
        r.fail(f"the null client got {r.events} of {run.w.events} events")


def _measured(run: RunContext) -> None:
    w, r, stack = run.w, run.result, run.stack
    urls = run.start_feeds()
    redis_server = stack.enter_context(RedisServerProcess())
    probe = run.probe = RedisProbe(redis_server.url)
    stack.callback(probe.close)
    run.pids["redis"] = probe.pid()
    expected = None
    if not w.paced:
        expected = _expected(run.symbols, SEED, run.per_host["realtime"], run.per_host["delayed"])
    env, health_port = sink_env(run, urls, redis_server.url)
    if w.client in ("comparator", "reference"):
        argv = [sys.executable, "-m", f"bench.{w.client}", "--realtime", urls["realtime"]]
        argv += ["--delayed", urls["delayed"], "--redis-url", redis_server.url]
        env = {"BENCH_SYMBOLS": ",".join(run.symbols), "SIMULATOR_API_KEY": API_KEY}
        client = run.child(w.client, argv, env, capture_stdout=True)
    else:
        if w.sink_src is not None:  # the baseline's packages first, then the bench's own
            env["PYTHONPATH"] = os.pathsep.join([w.sink_src, str(ROOT)])
        client = run.child("sink", [sys.executable, "-m", "polygon_runner", "run"], env)
    stack.callback(lambda: _keep_log_tail(r, client))

    def alive() -> bool:
        return client.proc.poll() is None

    if w.paced:
        keys = [
            KEY_PREFIX[c] + s
            for s in run.symbols[:LATENCY_SAMPLE_SYMBOLS]
            for c in "T Q FMV".split()
        ]
        run.sampler = LatencySampler(redis_server.url, keys)
        run.sampler.start()
        stack.callback(run.sampler.stop)
    t0 = probe.wait_first_write(60.0, alive)
    start = run.snap(client, t0)
    if expected is not None:
        end = until_final(run, client, expected, start.t, alive)
    elif w.client == "reference":
        end = until_written(run, client, start, alive)
    else:
        end = until_drained(run, client, health_port, alive)
    if end is None:
        return
    run.account(start, end)
    r.events = w.events
    r.peak_rss_bytes = client.peak_rss()
    if run.sampler is not None:
        run.sampler.stop()
    if w.client == "sink":
        check_sink(run, scrape_metrics(health_port), expected)
    code = client.stop(timeout_s=SHUTDOWN_S + 10)
    if code != 0:
        r.fail(f"{client.name} exited with {code} after SIGTERM")
    if w.client in ("comparator", "reference"):
        assert client.proc.stdout is not None
        got = json.loads(client.proc.stdout.read().decode().strip().splitlines()[-1])["events"]
        if got != w.events:
            r.fail(f"the {w.client} received {got} events, the simulators sent {w.events}")
    if run.sampler is not None:
        run.stop_feeds()  # they write their frames' send times on the way out
        sent = {role: read_frame_log(run.frame_log(role)) for role in run.hosts}
        latencies(run, sent, t0_wall=time.time() - (time.monotonic() - t0))


def _keep_log_tail(r: RunResult, client: Child) -> None:
    if not r.ok:
        r.extra["log_tail"] = client.log_tail(1500)
