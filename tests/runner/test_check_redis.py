"""``python -m polygon_runner check-redis`` against real Redis and the Upstash-shaped server."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest
import redis

from polygon_testing.upstash_server import UpstashServer
from tests.helpers import missing_server
from tests.redis_servers import RedisServerProcess, redis_server_available

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server():
    if not redis_server_available():
        missing_server("redis-server is not installed")
    with RedisServerProcess() as process:
        yield process


async def run_check(tmp_path, **env: str) -> tuple[int, str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "POLYGON_"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "polygon_runner",
        "check-redis",
        env={**clean, **env},
        cwd=tmp_path,  # no stray .env
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_ok_against_redis(server, tmp_path) -> None:
    code, out, _ = await run_check(tmp_path, REDIS_URL=server.url)
    assert code == 0 and out.startswith("OK: wrote and read back stock:test")
    direct = redis.Redis.from_url(server.url)
    assert 55 < direct.ttl("stock:test") <= 60
    assert b'"check":"polygon-sink"' in direct.get("stock:test")
    direct.close()


async def test_fails_clearly_when_redis_is_down(tmp_path) -> None:
    code, _, err = await run_check(tmp_path, REDIS_URL="redis://127.0.0.1:1/0")
    assert code == 1 and err.startswith("FAILED:") and "127.0.0.1:1" in err


async def test_wrong_password_never_printed(server, tmp_path) -> None:
    protected = RedisServerProcess().start()
    admin = redis.Redis(port=protected.port)
    admin.config_set("requirepass", "s3cret-pw")
    admin.close()
    try:
        url = f"redis://:bad-pw-123@127.0.0.1:{protected.port}/0"
        code, out, err = await run_check(tmp_path, REDIS_URL=url)
        assert code == 1 and "bad-pw-123" not in out + err
        good = f"redis://:s3cret-pw@127.0.0.1:{protected.port}/0"
        code, out, err = await run_check(tmp_path, REDIS_URL=good)
        assert code == 0 and "s3cret-pw" not in out + err
    finally:
        protected.stop()


async def test_ok_over_tls(redis_tls, tmp_path) -> None:
    code, out, err = await run_check(tmp_path, REDIS_URL=redis_tls.url())
    assert code == 0 and out.startswith("OK") and "rediss://localhost" in out, err


async def test_upstash_ok_and_wrong_token(server, tmp_path) -> None:
    upstash = UpstashServer(server.url.rsplit("/", 1)[0] + "/4", "check-token")
    base = await upstash.start()
    try:
        code, out, _ = await run_check(tmp_path, REDIS_URL=base, REDIS_TOKEN="check-token")
        assert code == 0 and "OK" in out, out
        code, out, err = await run_check(tmp_path, REDIS_URL=base, REDIS_TOKEN="nope-token-9")
        assert code == 1 and "401" in err and "REDIS_TOKEN" in err
        assert "nope-token-9" not in out + err
    finally:
        await upstash.stop()


async def test_configuration_errors_exit_2(tmp_path) -> None:
    code, _, err = await run_check(tmp_path)
    assert code == 2 and "REDIS_URL: is required" in err
    code, _, err = await run_check(tmp_path, REDIS_URL="https://db.upstash.io")
    assert code == 2 and "REDIS_TOKEN" in err
    code, _, err = await run_check(tmp_path, REDIS_URL="ftp://x")
    assert code == 2 and "REDIS_URL" in err
