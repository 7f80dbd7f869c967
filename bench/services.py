"""The servers a run needs besides the feed and Redis, and the sink's environment."""

from __future__ import annotations

import sys

import boto3

from bench.context import API_KEY, RunContext
from bench.procs import wait_port
from polygon_testing.local_redis import free_port

__all__ = ["SHUTDOWN_S", "sink_env"]

UPSTASH_TOKEN = "bench-token-91c2"
SHUTDOWN_S = 60


def sink_env(run: RunContext, urls: dict[str, str], redis_url: str) -> tuple[dict[str, str], int]:
    health_port = free_port()
    env = {
        "POLYGON_API_KEY": API_KEY,
        "POLYGON_WS_SYMBOLS": ",".join(run.symbols),
        "POLYGON_SUBSCRIBE_BATCH": str(len(run.symbols)),
        "POLYGON_DISCOVER_TICKERS": "false",
        "POLYGON_WS_HOST_REALTIME": urls["realtime"],
        "POLYGON_WS_HOST_DELAYED": urls["delayed"],
        "REDIS_URL": redis_url,
        "HEALTH_PORT": str(health_port),
        "LOG_FORMAT": "json",
        "SHUTDOWN_TIMEOUT_SEC": str(SHUTDOWN_S),
        "BACKOFF_INITIAL_MS": "100",
        "BACKOFF_MAX_MS": "1000",
    }
    if run.w.backend == "upstash":
        port = free_port()
        argv = [sys.executable, "-m", "polygon_testing.upstash_server", "--redis-url", redis_url]
        argv += ["--token", UPSTASH_TOKEN, "--port", str(port)]
        upstash = run.child("upstash", argv, {})
        wait_port(port, 30.0, upstash)
        run.pids["upstash"] = upstash.pid
        env |= {"REDIS_URL": f"http://127.0.0.1:{port}", "REDIS_TOKEN": UPSTASH_TOKEN}
    if run.w.s3:
        env |= _moto(run)
    return env, health_port


def _moto(run: RunContext) -> dict[str, str]:
    port = free_port()
    moto = run.child(
        "moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], {}
    )
    wait_port(port, 30.0, moto)
    run.pids["moto"] = moto.pid
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    endpoint = f"http://127.0.0.1:{port}"
    s3 = boto3.client(
        "s3", region_name="us-east-1", endpoint_url=endpoint,
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip
    s3.create_bucket(Bucket="bench")
    return {
        **creds, "AWS_REGION": "us-east-1", "S3_ENDPOINT_URL": endpoint, "S3_ENABLED": "true",
        "S3_BUCKET": "bench", "S3_PREFIX": "raw", "S3_HOSTNAME": "bench",
    }  # fmt: skip
