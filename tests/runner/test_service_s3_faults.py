"""The cold path never stops the hot path (issue 13), as a subprocess over real sockets.

S3 is moto's server behind a real TCP proxy (``bench.soak.proxy.TcpProxy``) that refuses
connections at start, then accepts and resets them, then forwards: Redis writes begin while
S3 is away, the archive recovers an earlier writer's upload and catches up once S3 answers,
and nothing accepted is lost. Configuration errors no retry can fix (no such bucket, bad
credentials, access denied: moto checks credentials when asked to, see
``tests.moto_server.MotoAuthServer``) stop the start with exit 2 and one line.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from collections import Counter
from pathlib import Path

import pytest
import redis
from bench.soak.proxy import TcpProxy

from polygon_adapters.s3_upload import open_s3_client
from polygon_sim.config import SimulatorConfig
from polygon_sim.server import PolygonSimulator
from tests.helpers import eventually, missing_server
from tests.moto_server import MotoAuthServer, moto_available, unique_bucket
from tests.redis_servers import free_port
from tests.runner.test_service_e2e import get, metric, start_service

pytestmark = pytest.mark.integration

API_KEY = "s3-faults-key-81d2"
SYMBOLS = ("AAPL", "MSFT", "TSLA")
EVENTS = 3000
LEAKS = ("never retrieved", "Traceback", "was destroyed but it is pending")


def service_env(sim: PolygonSimulator, redis_url: str, bucket: str) -> dict[str, str]:
    return {
        "POLYGON_API_KEY": API_KEY,
        "POLYGON_WS_SYMBOLS": ",".join(SYMBOLS),
        "POLYGON_DISCOVER_TICKERS": "false",
        "POLYGON_WS_HOST_REALTIME": sim.realtime_url,
        "POLYGON_WS_HOST_DELAYED": sim.delayed_url,
        "REDIS_URL": redis_url,
        "S3_ENABLED": "true",
        "S3_BUCKET": bucket,
        "S3_PREFIX": "raw",
        "S3_HOSTNAME": "faults-host",
        "LOG_FORMAT": "text",
    }


async def healthz(port: int) -> dict:
    _, body = await get(f"http://127.0.0.1:{port}/healthz")
    return json.loads(body)


async def gauge(port: int, name: str) -> float | None:
    _, text = await get(f"http://127.0.0.1:{port}/metrics")
    values = metric(text, name)
    return next(iter(values.values())) if values else None


async def test_s3_down_at_start_redis_first_archive_catches_up(
    own_redis_server, s3, tmp_path: Path
) -> None:
    bucket = unique_bucket("down")
    async with open_s3_client(s3.region, s3.endpoint_url, session=s3.aio_session()) as client:
        await client.create_bucket(Bucket=bucket)
        # an earlier writer's upload, left open with one part: recovery completes it
        key = "raw/channel=T/ingest_dt=2025/05/07/hour=10/part=x/old-host-seq=000001.ndjson"
        upload = await client.create_multipart_upload(Bucket=bucket, Key=key)
        await client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"{}\n"
        )
    proxy = TcpProxy(s3.port)
    await proxy.up()
    await proxy.down()  # S3 unreachable: connections refused
    config = SimulatorConfig(
        api_key=API_KEY, symbols=SYMBOLS, events_per_second=400, max_events=EVENTS, rest=False
    )
    health_port = free_port()
    log = tmp_path / "service.log"
    direct = redis.Redis.from_url(own_redis_server.url)
    async with PolygonSimulator(config) as sim:
        env = service_env(sim, own_redis_server.url, bucket)
        env.update(s3.env())
        env.update(S3_ENDPOINT_URL=f"http://127.0.0.1:{proxy.port}", HEALTH_PORT=str(health_port))
        proc = await start_service(env, log)
        try:
            await eventually(lambda: any(direct.scan_iter("stock:*")), within_s=20)
            body = await healthz(health_port)
            assert body["ok"] and body["archive"] == "degraded", body
            assert await gauge(health_port, "polygon_archive_recovering") == 1.0
            assert await gauge(health_port, "polygon_archive_degraded") == 1.0

            proxy.upstream_port = free_port()  # accepted, then reset: S3 still not there
            await proxy.up()
            await asyncio.sleep(1.0)
            assert (await healthz(health_port))["archive"] == "degraded"
            proxy.upstream_port = s3.port  # S3 answers again

            async def caught_up() -> bool:
                return await gauge(health_port, "polygon_archive_recovering") == 0.0

            for _ in range(300):
                if await caught_up():
                    break
                await asyncio.sleep(0.05)
            assert await caught_up(), log.read_text()[-3000:]
            await sim.truth.wait_total(EVENTS, timeout_s=30)
            for _ in range(200):  # every delivered event accepted by the service
                _, text = await get(f"http://127.0.0.1:{health_port}/metrics")
                if sum(metric(text, "polygon_events_total").values()) == EVENTS:
                    break
                await asyncio.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), timeout=30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await proxy.down()
    text = log.read_text()
    assert code == 0, text[-3000:]
    for leak in LEAKS:
        assert leak not in text, text[-3000:]

    async with open_s3_client(s3.region, s3.endpoint_url, session=s3.aio_session()) as client:
        assert not (await client.list_multipart_uploads(Bucket=bucket)).get("Uploads")
        listed = await client.list_objects_v2(Bucket=bucket)
        keys = [o["Key"] for o in listed.get("Contents", [])]
        assert key in keys  # the earlier writer's upload, completed by recovery
        lines: Counter[str] = Counter()
        for k in keys:
            if k.endswith(".ndjson") and k != key:
                obj = await client.get_object(Bucket=bucket, Key=k)
                for line in (await obj["Body"].read()).splitlines():
                    lines[json.loads(line)["channel"]] += 1
    assert dict(lines) == dict(sim.truth.counts())  # every event accepted is archived


def first_critical(text: str) -> list[str]:
    return [line for line in text.splitlines() if "CRITICAL" in line]


async def run_to_exit(env: dict[str, str], tmp_path: Path) -> tuple[int, str]:
    log = tmp_path / "service.log"
    proc = await start_service({"HEALTH_PORT": "0", **env}, log)
    try:
        code = await asyncio.wait_for(proc.wait(), timeout=30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return code, log.read_text()


async def test_missing_bucket_exits_2_with_one_line(s3, tmp_path: Path) -> None:
    config = SimulatorConfig(api_key=API_KEY, symbols=SYMBOLS, events_per_second=100, rest=False)
    async with PolygonSimulator(config) as sim:
        env = {**service_env(sim, "memory://", unique_bucket("missing")), **s3.env()}
        code, text = await run_to_exit(env, tmp_path)
    assert code == 2, text[-3000:]
    (line,) = first_critical(text)
    assert "cannot start: the S3 archive is misconfigured" in line and "NoSuchBucket" in line
    for leak in LEAKS:
        assert leak not in text, text[-3000:]


@pytest.fixture(scope="module")
def moto_auth():
    if not moto_available():
        missing_server("moto[server] is not installed")
    server = MotoAuthServer(unique_bucket("auth"))
    try:
        server.start()
    except RuntimeError as exc:
        missing_server(str(exc))
    yield server
    server.stop()


@pytest.mark.parametrize(
    ("who", "code_name"),
    [
        ("unknown key", "InvalidAccessKeyId"),
        ("wrong secret", "SignatureDoesNotMatch"),
        ("no permission", "AccessDenied"),
    ],
)
async def test_rejected_credentials_exit_2_with_one_line(
    moto_auth: MotoAuthServer, who: str, code_name: str, tmp_path: Path
) -> None:
    key_id, secret = {
        "unknown key": ("AKIAUNKNOWN000000000", "secret-unknown-9f1"),
        "wrong secret": (moto_auth.key_id, "secret-wrong-2c7"),
        "no permission": (moto_auth.key_id, moto_auth.secret),
    }[who]
    config = SimulatorConfig(api_key=API_KEY, symbols=SYMBOLS, events_per_second=100, rest=False)
    async with PolygonSimulator(config) as sim:
        env = {
            **service_env(sim, "memory://", moto_auth.bucket),
            **moto_auth.env(key_id, secret),
        }
        code, text = await run_to_exit(env, tmp_path)
    assert code == 2, text[-3000:]
    (line,) = first_critical(text)
    assert "cannot start: the S3 archive is misconfigured" in line and code_name in line
    assert secret not in text
    for leak in LEAKS:
        assert leak not in text, text[-3000:]


async def test_a_taken_health_port_with_s3_down_exits_at_once_with_one_line(
    own_redis_server, tmp_path: Path
) -> None:
    """A start that fails (here: HEALTH_PORT taken) says why at once and exits 1, also
    while S3 does not answer: the archive, which never ran, does not wait out the shutdown
    deadline retrying S3 (a soak once hung 90 s that way, the reason unsaid)."""
    config = SimulatorConfig(api_key=API_KEY, symbols=SYMBOLS, events_per_second=100, rest=False)
    with socket.socket() as taken, socket.socket() as dead:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        dead.bind(("127.0.0.1", 0))  # bound, never listening: S3 refuses every connection
        port, s3_port = taken.getsockname()[1], dead.getsockname()[1]
        async with PolygonSimulator(config) as sim:
            env = {
                **service_env(sim, own_redis_server.url, "any-bucket"),
                "S3_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
                "AWS_ACCESS_KEY_ID": "test",
                "AWS_SECRET_ACCESS_KEY": "test-secret-5e1",
                "AWS_REGION": "us-east-1",
                "SHUTDOWN_TIMEOUT_SEC": "60",
                "HEALTH_PORT": str(port),
            }
            started = asyncio.get_running_loop().time()
            code, text = await run_to_exit(env, tmp_path)
            took = asyncio.get_running_loop().time() - started
    assert code == 1, text[-3000:]
    (line,) = first_critical(text)
    assert f"cannot start: HEALTH_PORT {port} cannot be bound" in line, line
    assert "in use" in line, line
    assert "ListMultipartUploads" not in text, text[-3000:]
    assert took < 20, f"{took:.1f} s to exit"
    for leak in LEAKS:
        assert leak not in text, text[-3000:]
