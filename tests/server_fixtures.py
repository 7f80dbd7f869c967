"""Real servers for the contract suites, started once per session on free ports.

Absent binaries skip the tests that need them, except under CI=true where they fail.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import missing_server
from tests.moto_server import MotoS3Server, moto_available
from tests.redis_cluster import RedisClusterProcess, cluster_tools_available
from tests.redis_servers import RedisServerProcess, free_port, redis_server_available


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServerProcess]:
    if not redis_server_available():
        missing_server("redis-server is not installed")
    with RedisServerProcess() as server:
        yield server


@pytest.fixture
def own_redis_server() -> Iterator[RedisServerProcess]:
    """A redis-server of this test's own: empty, and nobody else's keys or clients."""
    if not redis_server_available():
        missing_server("redis-server is not installed")
    with RedisServerProcess() as server:
        yield server


@pytest.fixture
def s3() -> Iterator[MotoS3Server]:
    """moto's standalone S3 server of this test's own."""
    if not moto_available():
        missing_server("moto[server] is not installed")
    with MotoS3Server() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterProcess]:
    if not cluster_tools_available():
        missing_server("redis-server / redis-cli are not installed")
    with RedisClusterProcess() as cluster:
        yield cluster


@dataclass
class TlsRedis:
    server: RedisServerProcess
    tls_port: int
    ca_file: Path

    def url(self, ca_file: Path | None = None) -> str:
        return f"rediss://localhost:{self.tls_port}/0?ssl_ca_certs={ca_file or self.ca_file}"


def self_signed(directory: Path, name: str, dns: str = "localhost") -> tuple[Path, Path]:
    """A self-signed certificate (and its key) for the host name ``dns`` and 127.0.0.1."""
    cert, key = directory / f"{name}.pem", directory / f"{name}-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=polygon-sink-test",
         "-addext", f"subjectAltName=DNS:{dns},IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="session")
def redis_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    """A redis-server with a TLS port (self-signed certificate) next to its plain port."""
    if not redis_server_available() or shutil.which("openssl") is None:
        missing_server("redis-server and openssl are needed for the TLS tests")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = self_signed(directory, "server")
    tls_port = free_port()
    args = ("--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file",
            str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no")  # fmt: skip
    with RedisServerProcess(extra_args=args) as server:
        yield TlsRedis(server, tls_port, cert)
