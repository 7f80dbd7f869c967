"""A throwaway Redis Cluster on free loopback ports (3 primaries; optionally a replica each),
for tests."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["RedisClusterProcess", "cluster_tools_available"]


def cluster_tools_available() -> bool:
    return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(n: int) -> list[int]:
    """Ports whose cluster bus port (+10000) is free too; both must stay <= 65535."""
    ports: list[int] = []
    while len(ports) < n:
        port = random.randint(20000, 55000)
        if port not in ports and _bindable(port) and _bindable(port + 10000):
            ports.append(port)
    return ports


class RedisClusterProcess:
    """``with RedisClusterProcess() as cluster: cluster.url`` -> ``redis+cluster://...``."""

    def __init__(self, nodes: int = 3, replicas: int = 0) -> None:
        self.replicas = replicas
        self.ports = _free_ports(nodes * (1 + replicas))
        self._dir = Path(tempfile.mkdtemp(prefix="polygon-sink-cluster-"))
        self._procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def start(self) -> RedisClusterProcess:
        for port in self.ports:
            self._procs.append(
                subprocess.Popen(
                    [
                        "redis-server",
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        f"nodes-{port}.conf",
                        "--cluster-node-timeout",
                        "2000",
                        "--repl-diskless-sync-delay",
                        "0",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        str(self._dir),
                    ],  # fmt: skip
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for port in self.ports:
            self._cli(port, "ping", expect=b"PONG")
        subprocess.run(
            ["redis-cli", "--cluster", "create"]
            + [f"127.0.0.1:{p}" for p in self.ports]
            + ["--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        for port in self.ports:
            self._cli(port, "cluster", "info", expect=b"cluster_state:ok")
        return self

    def cli(self, port: int, *args: str) -> str:
        """``redis-cli -p port args...``'s output."""
        out = subprocess.run(
            ["redis-cli", "-p", str(port), *args], capture_output=True, timeout=5, check=True
        )
        return out.stdout.decode()

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port`` (a crash; the cluster fails over to its replica)."""
        proc = self._procs[self.ports.index(port)]
        proc.kill()
        proc.wait(timeout=5)

    def roles(self) -> dict[int, str]:
        """``{port: "master" | "slave"}`` as each live node sees itself."""
        alive = [p for p, proc in zip(self.ports, self._procs, strict=True) if proc.poll() is None]
        return {p: self.cli(p, "role").split("\n", 1)[0].strip() for p in alive}

    def _cli(self, port: int, *args: str, expect: bytes, within_s: float = 15.0) -> None:
        deadline = time.monotonic() + within_s
        while True:
            out = subprocess.run(
                ["redis-cli", "-p", str(port), *args], capture_output=True, timeout=5
            ).stdout
            if expect in out:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis node {port}: {' '.join(args)} never gave {expect!r}")
            time.sleep(0.05)

    def stop(self) -> None:
        for proc in self._procs:
            proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisClusterProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
