"""The state of one run: what it measured (:class:`RunResult`) and what it holds (the
feed processes, the Redis probe, the latency sampler), with the snapshots taken at both
ends of the measured interval."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.expected import bench_symbols
from bench.probe import LatencySampler, RedisProbe, busy_cpu_seconds
from bench.procs import Child, FeedHost, cpu_seconds, start_child
from bench.workloads import DAY_LEAD_S, Workload

__all__ = ["API_KEY", "SEED", "RunContext", "RunResult", "Snapshot"]

API_KEY = "bench-key-7f3a"
SEED = 7


@dataclass
class RunResult:
    key: str
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    events: int = 0
    seconds: float = 0.0
    cpu_s: float = 0.0
    peak_rss_bytes: int = 0
    redis_commands: int = 0
    latency_ms: list[float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def fail(self, problem: str) -> None:
        self.ok = False
        self.problems.append(problem)

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_s * 1e6 / self.events if self.events else 0.0

    @property
    def commands_per_event(self) -> float:
        return self.redis_commands / self.events if self.events else 0.0


@dataclass
class Snapshot:
    t: float
    client_cpu: float
    others_cpu: dict[str, float]
    busy: float
    driver_cpu: float
    commands: dict[str, int]
    sent: int


class RunContext:
    def __init__(self, w: Workload, workdir: Path, stack: contextlib.ExitStack) -> None:
        self.w, self.workdir, self.stack = w, workdir, stack
        self.symbols = bench_symbols(w.symbols)
        self.per_host = w.per_host
        self.result = RunResult(w.key)
        self.pids: dict[str, int] = {}
        self.probe: RedisProbe | None = None
        self.sampler: LatencySampler | None = None

    def start_feeds(self) -> dict[str, str]:
        w, realistic = self.w, self.w.market == "realistic"
        hosts = {
            role: FeedHost.start(
                role,
                self.workdir,
                api_key=API_KEY,
                symbols=self.symbols,
                rate=w.rate if realistic else w.rate / 2,
                max_events=n,
                seed=SEED if realistic or not w.paced else None,
                events_per_frame=w.events_per_frame,
                frame_log=self.frame_log(role) if w.paced else None,
                market=self._market_args(),
            )  # fmt: skip
            for role, n in self.per_host.items()
        }
        for role, host in hosts.items():
            self.stack.callback(host.child.stop)
            self.pids[f"sim_{role}"] = host.child.pid
        self.hosts = hosts
        return {role: host.wait_ready() for role, host in hosts.items()}

    def _market_args(self) -> list[str]:
        """The simulators' market options: one session clock for both (the same origin)."""
        w = self.w
        if w.market == "flat":
            return ["--market", "flat"]
        origin = self.result.extra.setdefault("session_origin", time.time() + DAY_LEAD_S)
        return [
            "--market", "realistic", "--session", w.session, "--speed", f"{w.speed:g}",
            "--session-origin", f"{origin:.3f}",
        ]  # fmt: skip

    def frame_log(self, role: str) -> Path:
        """Where the simulator of ``role`` writes its frames' send times (paced runs)."""
        return self.workdir / f"frames-{role}.bin"

    def stop_feeds(self) -> None:
        """Stop both simulators (they write their frame logs on the way out)."""
        for host in self.hosts.values():
            host.child.stop()

    def child(self, name: str, argv: list[str], env: dict[str, str], **kw: Any) -> Child:
        child = start_child(name, argv, self.workdir, env, **kw)
        self.stack.callback(child.stop)
        return child

    def snap(self, client: Child, t: float | None = None) -> Snapshot:
        assert self.probe is not None
        sent = self.probe.sent + (self.sampler.sent if self.sampler else 0)
        commands = self.probe.commandstats()
        times = os.times()
        return Snapshot(
            t if t is not None else time.monotonic(),
            client.cpu_s(),
            {name: cpu_seconds(pid) for name, pid in self.pids.items()},
            busy_cpu_seconds(),
            times.user + times.system,
            commands,
            sent,
        )

    def account(self, a: Snapshot, b: Snapshot) -> None:
        r = self.result
        r.seconds = seconds = b.t - a.t
        r.cpu_s = b.client_cpu - a.client_cpu
        r.redis_commands = sum(b.commands.values()) - sum(a.commands.values()) - (b.sent - a.sent)
        if r.redis_commands <= 0:
            # The window opens at the first write the probe sees: on a starved machine a short
            # run can be over by then, and its figures would be those of an empty window.
            r.fail(
                f"the measurement window missed the run: no Redis command counted in its "
                f"{seconds * 1000:.1f} ms (the first write was seen after the work was done)"
            )
        others = {n: b.others_cpu[n] - a.others_cpu[n] for n in a.others_cpu}
        driver = b.driver_cpu - a.driver_cpu
        machine = b.busy - a.busy
        r.extra["cpu_s"] = {k: round(v, 3) for k, v in others.items()}
        r.extra["driver_cpu_s"] = round(driver, 3)
        feed = sum(v for k, v in others.items() if k.startswith("sim_"))
        cores = {"client": r.cpu_s, "feed": feed}
        cores |= {k: v for k, v in others.items() if not k.startswith("sim_")}
        cores |= {
            "driver": driver,
            "other": max(0.0, machine - r.cpu_s - sum(others.values()) - driver),
        }
        r.extra["cores"] = {k: round(v / seconds, 2) for k, v in cores.items()}
        r.extra["cores"]["machine"] = round(machine / seconds, 2)
        r.extra["foreign_cores"] = r.extra["cores"]["other"]
        if feed > 0 and not self.w.paced:
            # The simulators do the same work per event in every flat-out run, so this
            # ratio is steadier than raw µs/event when the machine's speed drifts.
            r.extra["client_vs_feed_cpu"] = round(r.cpu_s / feed, 3)
        r.extra["commands"] = {
            k: v - a.commands.get(k, 0) for k, v in b.commands.items() if v - a.commands.get(k, 0)
        }
