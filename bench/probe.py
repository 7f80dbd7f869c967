"""What the driver observes: Redis (commands, first write, final values, latency samples),
the sink's ``/metrics`` once a run is over, and the machine's CPU.

Every command the driver itself sends to Redis is counted, so that the sink's commands are
``INFO commandstats`` calls at the end minus at the start minus the driver's own.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import hiredis
import redis

from bench.expected import Expected, check_record

__all__ = [
    "LatencySampler",
    "RedisProbe",
    "busy_cpu_seconds",
    "metric_sum",
    "scrape_metrics",
]


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has been busy (``/proc/stat``, all cores)."""
    import os

    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def scrape_metrics(port: int, timeout_s: float = 5.0) -> dict[str, dict[str, float]]:
    """The sink's ``/metrics`` as ``{name: {labels: value}}``."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - loopback
        text = response.read().decode()
    families: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, brace, labels = head.partition("{")
        families.setdefault(name, {})[brace + labels] = float(value)
    return families


def metric_sum(metrics: dict[str, dict[str, float]], name: str) -> float:
    return sum(metrics.get(name, {}).values())


class Resp:
    """A minimal blocking RESP connection (raw socket + hiredis) for the tight polls: about
    a third of redis-py's client CPU per command, which matters on a 2-core machine."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        address = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self.sock = socket.create_connection(address, timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = hiredis.Reader()

    @staticmethod
    def pack(*args: str | bytes) -> bytes:
        items = [a.encode() if isinstance(a, str) else a for a in args]
        return b"*%d\r\n" % len(items) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in items)

    def call(self, packed: bytes) -> Any:
        self.sock.sendall(packed)
        reply = self.reader.gets()
        while reply is False:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("redis-server closed the connection")
            self.reader.feed(chunk)
            reply = self.reader.gets()
        return reply

    def close(self) -> None:
        self.sock.close()


class RedisProbe:
    """The driver's own connections to the private redis-server."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=30)
        self.raw = Resp(url)
        self.sent = 0

    def close(self) -> None:
        self.client.close()
        self.raw.close()

    def _info(self, section: str) -> dict[str, Any]:
        self.sent += 1
        info: dict[str, Any] = self.client.info(section)
        return info

    def pid(self) -> int:
        return int(self._info("server")["process_id"])

    def commandstats(self) -> dict[str, int]:
        """Calls per command since start (``INFO commandstats``)."""
        return {
            name.removeprefix("cmdstat_"): int(value["calls"])
            for name, value in self._info("commandstats").items()
        }

    def wait_first_write(self, timeout_s: float, alive: Any) -> float:
        """Poll ``DBSIZE`` every 1 ms; the monotonic time it first saw a key."""
        deadline = time.monotonic() + timeout_s
        dbsize = Resp.pack("DBSIZE")
        while True:
            self.sent += 1
            if self.raw.call(dbsize):
                return time.monotonic()
            if time.monotonic() > deadline:
                raise TimeoutError(f"no write reached Redis within {timeout_s:.0f} s")
            if not alive():
                raise RuntimeError("the client under test exited before writing anything")
            time.sleep(0.001)

    def wait_finals(
        self, keys: Sequence[str], expected: Expected, timeout_s: float, alive: Any
    ) -> float | None:
        """Poll ``keys`` (one MGET of those not yet final, every 5 ms) until each holds its
        final record; the monotonic time of the poll that saw the last one, or ``None`` on
        timeout. A final value stays final (nothing newer exists), and the full check
        after this catches a sink that would overwrite it."""
        deadline = time.monotonic() + timeout_s
        pending = {k: (expected.needle(k), *expected.finals[k]) for k in keys}
        while True:
            names = list(pending)
            self.sent += 1
            values = self.raw.call(Resp.pack("MGET", *names))
            seen = time.monotonic()
            for name, raw in zip(names, values, strict=True):
                needle, channel, record = pending[name]
                if raw and needle in raw and check_record(raw, channel, record) is None:
                    del pending[name]
            if not pending:
                return seen
            if seen > deadline or not alive():
                return None
            time.sleep(0.005)

    def mismatches(self, expected: Expected, limit: int = 5) -> tuple[int, list[str]]:
        """Check every key against its final record (MGET in chunks): how many differ and
        a few examples. Also checks that each key of a sample has a TTL."""
        keys = list(expected.finals)
        bad, examples = 0, list[str]()
        for start in range(0, len(keys), 2000):
            chunk = keys[start : start + 2000]
            self.sent += 1
            for key, raw in zip(chunk, self.raw.call(Resp.pack("MGET", *chunk)), strict=True):
                channel, values = expected.finals[key]
                problem = check_record(raw, channel, values)
                if problem is not None:
                    bad += 1
                    if len(examples) < limit:
                        examples.append(f"{key}: {problem}")
        for key in keys[:: max(1, len(keys) // 20)]:
            self.sent += 1
            if self.raw.call(Resp.pack("TTL", key)) <= 0:
                bad += 1
                if len(examples) < limit:
                    examples.append(f"{key}: no TTL")
        return bad, examples


def _epoch_ms(iso: str) -> float:
    """``2025-05-07T13:30:00.123Z`` -> epoch ms."""
    stamp = datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return stamp.timestamp() * 1000.0


_STAMP_FIELD = {"stock:trade:": "size", "stock:quote:": "bidSize", "stock:fmv:": "price"}
"""Where the simulator's frame number lands in each sampled record (``polygon_sim.stamps``)."""
_ROLE = {"stock:trade:": "delayed", "stock:quote:": "delayed", "stock:fmv:": "realtime"}


@dataclass
class LatencySampler:
    """Frame -> Redis latency, sampled from outside the client under test.

    The simulators number their frames and stamp each event with its frame's number
    (:mod:`polygon_sim.stamps`); they log when each frame was sent. A thread polls a
    fixed sample of ``T``/``Q``/``FMV`` keys with one MGET every ``period_s``. When a key's
    value differs from what the previous poll saw, that value was written to Redis after the
    previous MGET was sent and before this one's reply arrived, so, with ``sent`` the send
    time of the frame that carried it,

        latency <= reply_time - sent       (what is reported: an upper bound)
        latency >  previous_send - sent

    Each observation keeps the reply time, the previous send, the host and the frame
    number; :func:`bench.checks.latencies` resolves them against the frame logs.
    """

    url: str
    keys: Sequence[str]
    period_s: float = 0.001
    sent: int = 0
    observations: list[tuple[float, float, str, int, float]] = field(default_factory=list)
    """(wall time seen, previous poll's send time, host role, frame number, ``updatedAt``
    as epoch ms)."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    error: BaseException | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="latency-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        keys = list(self.keys)
        stamp = [
            (_STAMP_FIELD[k[: k.rindex(":") + 1]], _ROLE[k[: k.rindex(":") + 1]]) for k in keys
        ]
        command = Resp.pack("MGET", *keys)
        last: dict[str, bytes] = {}
        previous_send: float | None = None
        try:
            connection = Resp(self.url)
            try:
                while not self._stop.is_set():
                    sent_at = time.time()
                    values = connection.call(command)
                    seen_at = time.time()
                    self.sent += 1
                    for key, raw, (name, role) in zip(keys, values, stamp, strict=True):
                        before = last.get(key)
                        if raw is None or raw == before:
                            continue
                        last[key] = raw
                        if before is not None and previous_send is not None:
                            record = json.loads(raw)
                            updated = _epoch_ms(record["updatedAt"])
                            self.observations.append(
                                (seen_at, previous_send, role, int(record[name]), updated)
                            )
                    previous_send = sent_at
                    time.sleep(self.period_s)
            finally:
                connection.close()
        except BaseException as exc:  # reported by the driver; the thread must not die silently
            self.error = exc
