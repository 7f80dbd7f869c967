"""Real processes for the leader-lease tests: the service as subprocesses against the
simulator (which counts authenticated connections per host), a watcher that polls Redis
for write gaps, expiries and rollbacks, and a MONITOR that tells which task sent what."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import redis
from bench.service_task import ServiceTask, WriteWatcher, spawn_service

from tests.redis_servers import free_port

API_KEY = "ha-key-7d1e"
SYMBOLS = ("AAPL", "MSFT", "TSLA", "BRK.B")
FAMILIES = ("agg1m", "fmv", "trade", "quote")
KEYS = [f"stock:{f}:{s}" for f in FAMILIES for s in SYMBOLS]
FENCED_MARK = "local written"  # a phrase of the fenced batch script (lease_scripts.py)


Task = ServiceTask


async def start_task(env: dict[str, str], directory: Path, name: str) -> Task:
    return await spawn_service(env, directory, name, free_port())


def service_env(sim: object, redis_url: str, ttl_ms: int, **extra: str) -> dict[str, str]:
    return {
        "POLYGON_API_KEY": API_KEY,
        "POLYGON_WS_SYMBOLS": ",".join(SYMBOLS),
        "POLYGON_DISCOVER_TICKERS": "false",
        "POLYGON_WS_HOST_REALTIME": sim.realtime_url,  # type: ignore[attr-defined]
        "POLYGON_WS_HOST_DELAYED": sim.delayed_url,  # type: ignore[attr-defined]
        "REDIS_URL": redis_url,
        "HA_ENABLED": "true",
        "HA_LEASE_TTL_MS": str(ttl_ms),
        "WS_HEALTH_INTERVAL_SEC": "1",
        "BACKOFF_INITIAL_MS": "50",
        "SHUTDOWN_TIMEOUT_SEC": "10",
        "LOG_FORMAT": "text",
        **extra,
    }


class Watcher(WriteWatcher):
    """Every key of the test's symbols, polled every 5 ms."""

    def __init__(self, url: str) -> None:
        super().__init__(url, KEYS)


class Monitor:
    """Redis MONITOR in a thread: (time, client addr, is a fenced batch) per EVAL, and the
    client names (``polygon-sink-<pid>``) by address from CLIENT LIST, polled."""

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url)
        self._admin = redis.Redis.from_url(url)
        self.evals: list[tuple[float, str, bool]] = []
        self.names: dict[str, str] = {}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._watch, daemon=True),
            threading.Thread(target=self._names, daemon=True),
        ]

    def __enter__(self) -> Monitor:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads[1:]:
            t.join(timeout=2)

    def _watch(self) -> None:
        try:
            self._listen()
        except (redis.ConnectionError, OSError, ValueError):
            if not self._stop.is_set():
                raise

    def _listen(self) -> None:
        with self._client.monitor() as m:
            for item in m.listen():
                if self._stop.is_set():
                    return
                command = item.get("command", "")
                if command.upper().startswith("EVAL "):
                    addr = f"{item.get('client_address')}:{item.get('client_port')}"
                    self.evals.append((time.monotonic(), addr, FENCED_MARK in command))

    def _names(self) -> None:
        while not self._stop.is_set():
            for c in self._admin.client_list():
                if c.get("name", "").startswith("polygon-sink-"):
                    self.names[c["addr"]] = c["name"]
            time.sleep(0.05)

    def fenced_batches(self, pid: int, after: float = 0.0) -> list[float]:
        """Send times (monotonic, as MONITOR reported them to us) of fenced batches from
        the task ``pid`` after ``after``."""
        name = f"polygon-sink-{pid}"
        return [
            t
            for t, addr, fenced in self.evals
            if fenced and t > after and self.names.get(addr) == name
        ]
