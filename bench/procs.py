"""Child processes of the benchmark and what /proc says about them.

Every server the benchmark measures or feeds runs in its own process so that none of them
shares the driver's CPU or event loop: the simulator (one process per feed host), the sink
(``python -m polygon_runner run``), the comparator, redis-server, moto and the Upstash-shaped
REST server. CPU time is ``utime + stime`` of ``/proc/<pid>/stat`` (clock ticks, usually
10 ms: at these run lengths well under 1 % of the figure); peak RSS is ``VmHWM`` of
``/proc/<pid>/status``.
"""

from __future__ import annotations

import ast
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "Child",
    "FeedHost",
    "ROOT",
    "cpu_seconds",
    "peak_rss_bytes",
    "start_child",
    "wait_port",
]

ROOT = Path(__file__).resolve().parent.parent
_TICKS = os.sysconf("SC_CLK_TCK")
_STATS = re.compile(r"delivered (\d+) events .*? (\{.*?\}) connections")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (all its threads, dead ones included)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def peak_rss_bytes(pid: int) -> int:
    """``VmHWM``: the peak resident set size of ``pid`` so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def wait_port(port: int, timeout_s: float, child: Child | None = None) -> None:
    """Wait until 127.0.0.1:``port`` accepts connections (or ``child`` exits)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if child is not None and child.proc.poll() is not None:
                raise RuntimeError(f"{child.name} exited early:\n{child.log_tail()}") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on port {port}") from None
            time.sleep(0.02)


@dataclass
class Child:
    """One child process; stdout+stderr go to ``log`` (or are parsed, see FeedHost)."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_s(self) -> float:
        return cpu_seconds(self.pid)

    def peak_rss(self) -> int:
        return peak_rss_bytes(self.pid)

    def stop(self, timeout_s: float = 10.0, sig: int = signal.SIGTERM) -> int:
        """Signal, wait (then kill); the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def start_child(
    name: str,
    argv: Sequence[str],
    workdir: Path,
    env: Mapping[str, str] | None = None,
    *,
    capture_stdout: bool = False,
) -> Child:
    """Start ``argv`` in ``workdir`` (no ``.env`` there) with ``env`` over a clean base."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("POLYGON_", "REDIS_", "S3_", "AWS_", "SIMULATOR_", "UPSTASH_"))
    }
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), base.get("PYTHONPATH")]))
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            list(argv),
            cwd=workdir,
            env={**base, **(env or {})},
            stdout=subprocess.PIPE if capture_stdout else out,
            stderr=out,
            stdin=subprocess.DEVNULL,
        )
    return Child(name, proc, log)


@dataclass
class FeedHost:
    """A simulator process serving one feed host; its stats lines are parsed as they come.

    ``python -m polygon_runner simulate`` prints its URLs, then every ``--stats-interval``
    the events delivered so far and the counts per channel.
    """

    child: Child
    role: str
    url: str = ""
    delivered: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    _ready: threading.Event = field(default_factory=threading.Event)
    _lines: list[str] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        role: str,
        workdir: Path,
        *,
        api_key: str,
        symbols: Sequence[str],
        rate: float,
        max_events: int,
        seed: int | None,
        events_per_frame: int = 50,
        stats_interval_s: float = 0.1,
        frame_log: Path | None = None,
    ) -> FeedHost:
        argv = [
            sys.executable, "-m", "polygon_runner", "simulate", "--no-rest", "--market", "flat",
            "--symbols", ",".join(symbols), "--rate", str(rate),
            "--events-per-frame", str(events_per_frame), "--max-events", str(max_events),
            "--stats-interval", str(stats_interval_s), "--auth-timeout", "0",
        ]  # fmt: skip
        if seed is not None:
            argv += ["--seed", str(seed)]
        if frame_log is not None:
            argv += ["--frame-log", str(frame_log)]
        child = start_child(
            f"sim-{role}", argv, workdir, {"SIMULATOR_API_KEY": api_key}, capture_stdout=True
        )
        host = cls(child, role)
        threading.Thread(target=host._read, name=f"sim-{role}-stdout", daemon=True).start()
        return host

    def _read(self) -> None:
        assert self.child.proc.stdout is not None
        prefix = "realtime" if self.role == "realtime" else "delayed"
        for raw in self.child.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            self._lines.append(line)
            if line.startswith(prefix) and "ws://" in line:
                self.url = line[line.index("ws://") :].removesuffix("/stocks")
            elif line.startswith("serving"):
                self._ready.set()
            elif (match := _STATS.search(line)) is not None:
                counts = ast.literal_eval(match.group(2))
                self.counts = {str(k): int(v) for k, v in counts.items()}
                self.delivered = int(match.group(1))
        self._ready.set()

    def wait_ready(self, timeout_s: float = 30.0) -> str:
        if not self._ready.wait(timeout_s) or not self.url:
            output = "\n".join(self._lines[-20:]) + self.child.log_tail()
            raise RuntimeError(f"simulator ({self.role}) did not start:\n{output}")
        return self.url

    def wait_delivered(self, total: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.delivered < total:
            if time.monotonic() > deadline or self.child.proc.poll() is not None:
                return False
            time.sleep(0.02)
        return True
