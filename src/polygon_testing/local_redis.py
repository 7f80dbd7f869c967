"""Throwaway ``redis-server`` processes: for the demo, the benchmark and the tests.

::

    from polygon_testing.local_redis import RedisServerProcess, redis_server_available

    with RedisServerProcess() as server:      # free loopback port, temp dir, no persistence
        client = redis.Redis.from_url(server.url)
        server.restart()                      # same port: an outage and a recovery

``start()`` waits until the server answers PING; ``stop()`` terminates it (then kills it
if it lingers) and removes the temp dir. Never touches the shared Redis on 6379.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["RedisServerProcess", "find_redis_server", "free_port", "redis_server_available"]

_CANDIDATES = ("/usr/bin/redis-server", "/usr/local/bin/redis-server")


def find_redis_server() -> str | None:
    """Path of a ``redis-server`` binary ($REDIS_SERVER, PATH, usual places), or None."""
    explicit = os.environ.get("REDIS_SERVER")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which("redis-server")
    if found:
        return found
    return next((c for c in _CANDIDATES if os.access(c, os.X_OK)), None)


def redis_server_available() -> bool:
    return find_redis_server() is not None


_PORT_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_PORTS_BELOW = 12_000
"""How many ports below the kernel's ephemeral range :func:`free_port` draws from."""


def _ephemeral_low() -> int:
    try:
        return int(_PORT_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A TCP port free on every address a moment ago, for a server started next.

    Drawn below the kernel's ephemeral range: a port the kernel hands out meanwhile (to a
    bind to port 0, or as the local end of an outgoing connection) is never one of these,
    so a child told to listen on it does not find it taken (a soak once lost its health
    port that way). Falls back to a kernel-chosen port when the range leaves no room.
    """
    low = _ephemeral_low()
    attempts = 200 if low > 1024 + _PORTS_BELOW else 0
    rng = random.SystemRandom()
    for _ in range(attempts):
        port = rng.randrange(low - _PORTS_BELOW, low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("", port))  # no SO_REUSEADDR: a port in TIME_WAIT is passed over
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def _ping(port: int, timeout_s: float = 0.5, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(b"PING\r\n")
            # A server with ``requirepass`` answers NOAUTH, a replica cut off from its
            # primary MASTERDOWN, one loading its dataset LOADING: up all the same.
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH", b"-MASTERDOWN", b"-LOADING"))
    except OSError:
        return False


class RedisServerProcess:
    """One private ``redis-server`` on loopback; ``url`` is ``redis://127.0.0.1:<port>/0``.

    ``host`` is the loopback address it binds (another one of 127/8, e.g. ``127.0.0.2``,
    lets two servers share a port, like the nodes behind a managed endpoint)."""

    def __init__(
        self,
        port: int | None = None,
        *,
        binary: str | None = None,
        extra_args: tuple[str, ...] = (),
        startup_timeout_s: float = 10.0,
        host: str = "127.0.0.1",
    ) -> None:
        if not host.startswith("127."):
            raise ValueError(f"only loopback addresses are used, not {host!r}")
        self.host = host
        self.binary = binary or find_redis_server()
        self.port = port or free_port()
        self.extra_args = extra_args
        self.startup_timeout_s = startup_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> RedisServerProcess:
        if self.running:
            return self
        if self.binary is None:
            raise FileNotFoundError("redis-server not found (set $REDIS_SERVER or install it)")
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="redis-test-"))
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(self._dir),
            *self.extra_args,
        ]  # fmt: skip
        log = (self._dir / "redis.log").open("ab")
        try:
            self._process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()
        deadline = time.monotonic() + self.startup_timeout_s
        while not _ping(self.port, host=self.host):
            if self._process.poll() is not None or time.monotonic() > deadline:
                output = self._log_tail()
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{output}")
            time.sleep(0.02)
        return self

    def stop(self, *, keep_dir: bool = False) -> None:
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)
        if not keep_dir and self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def kill(self) -> None:
        """SIGKILL the server (a crash: no shutdown, no save); :meth:`start` brings it back
        on the same port."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=5)

    def restart(self, downtime_s: float = 0.0) -> RedisServerProcess:
        """Stop and start again on the same port (data is lost: no persistence)."""
        self.stop(keep_dir=True)
        if downtime_s:
            time.sleep(downtime_s)
        return self.start()

    def _log_tail(self) -> str:
        log = self._dir / "redis.log" if self._dir else None
        if log is None or not log.exists():
            return ""
        return log.read_text(errors="replace")[-2000:]

    def __enter__(self) -> RedisServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"RedisServerProcess({self.host}:{self.port}, {state})"
