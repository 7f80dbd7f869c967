"""Real servers for the contract suites, started once per session on free ports.

Absent binaries skip the tests that need them, except under CI=true where they fail.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import missing_server
from tests.redis_cluster import RedisClusterProcess, cluster_tools_available
from tests.redis_servers import RedisServerProcess, redis_server_available


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServerProcess]:
    if not redis_server_available():
        missing_server("redis-server is not installed")
    with RedisServerProcess() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterProcess]:
    if not cluster_tools_available():
        missing_server("redis-server / redis-cli are not installed")
    with RedisClusterProcess() as cluster:
        yield cluster
