"""moto's standalone S3 server on a free loopback port, for tests, the benchmark and soaks.

No pytest import here, so any test module or script can use it::

    from tests.moto_server import MotoS3Server, moto_available

    with MotoS3Server() as s3:                    # ThreadedMotoServer on 127.0.0.1:<free port>
        session = s3.aio_session()                # aiobotocore session with dummy credentials
        async with open_s3_client(s3.region, s3.endpoint_url, session=session) as client:
            await client.create_bucket(Bucket="b")
        s3.stop()                                 # an outage: the port refuses connections
        s3.start()                                # back on the same port, same data

``env()`` gives the variables a subprocess needs (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ``S3_ENDPOINT_URL``). The server keeps its data
in this process (moto's in-memory backend), across ``stop()``/``start()``; use a fresh
bucket per test. moto enforces S3's 5 MiB minimum for every part but the last
(``S3_UPLOAD_PART_MIN_SIZE``, read once when moto is imported).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import uuid
from types import TracebackType
from typing import Any

__all__ = ["MotoAuthServer", "MotoS3Server", "moto_available", "unique_bucket"]

ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"


def moto_available() -> bool:
    """True when ``moto[server]`` (moto, werkzeug, flask) can be imported."""
    return all(importlib.util.find_spec(m) is not None for m in ("moto", "werkzeug", "flask"))


def unique_bucket(stem: str = "test") -> str:
    """A fresh, valid bucket name."""
    return f"{stem}-{uuid.uuid4().hex[:12]}".lower()


class MotoS3Server:
    """moto's ``ThreadedMotoServer`` on loopback with ``stop()``/``start()`` on one port."""

    def __init__(self, port: int = 0, *, region: str = "us-east-1") -> None:
        self.port = port
        self.region = region
        self.access_key_id = ACCESS_KEY_ID
        self.secret_access_key = SECRET_ACCESS_KEY
        self._server: Any = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self, timeout_s: float = 10.0) -> None:
        """Start (or restart, on the same port) and wait until the port accepts."""
        if self._server is not None:
            return
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        server.start()
        inner = getattr(server, "_server", None)
        if inner is None:
            raise RuntimeError("moto server did not start")
        self.port = int(server.get_host_and_port()[1])
        self._server = server
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        """Stop serving and close the listening socket (clients then get refused)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.stop()
        inner = getattr(server, "_server", None)
        if inner is not None:
            inner.server_close()

    def env(self) -> dict[str, str]:
        """Environment for a process that should use this server through the AWS chain."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "S3_ENDPOINT_URL": self.endpoint_url,
        }

    def aio_session(self) -> Any:
        """An aiobotocore ``AioSession`` holding the dummy credentials (no env needed)."""
        from aiobotocore.session import get_session

        session = get_session()
        session.set_credentials(self.access_key_id, self.secret_access_key)
        return session

    def __enter__(self) -> MotoS3Server:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class MotoAuthServer:
    """moto's server as a process of its own that checks credentials, as S3 does.

    moto checks access keys and signatures against its own IAM once
    ``INITIAL_NO_AUTH_ACTION_COUNT`` actions have passed (read when moto is imported, hence
    a process of its own). :meth:`start` uses the free actions to make an IAM user with an
    access key and no policy, and a bucket; then the dummy keys get ``InvalidAccessKeyId``,
    the user's key with a wrong secret ``SignatureDoesNotMatch``, and the user's own key
    ``AccessDenied``.
    """

    FREE_ACTIONS = 3  # CreateUser, CreateAccessKey, CreateBucket

    def __init__(self, bucket: str, *, region: str = "us-east-1") -> None:
        self.bucket = bucket
        self.region = region
        self.port = 0
        self.key_id = ""
        self.secret = ""
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> None:
        import boto3

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(self.FREE_ACTIONS)}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline or self._proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("moto's server did not start") from None
                time.sleep(0.05)
        options: dict[str, Any] = {
            "region_name": self.region,
            "endpoint_url": self.endpoint_url,
            "aws_access_key_id": ACCESS_KEY_ID,
            "aws_secret_access_key": SECRET_ACCESS_KEY,
        }
        iam = boto3.client("iam", **options)
        iam.create_user(UserName="no-policy")
        key = iam.create_access_key(UserName="no-policy")["AccessKey"]
        self.key_id, self.secret = key["AccessKeyId"], key["SecretAccessKey"]
        boto3.client("s3", **options).create_bucket(Bucket=self.bucket)

    def env(self, key_id: str, secret: str) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": key_id,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_REGION": self.region,
            "S3_ENDPOINT_URL": self.endpoint_url,
        }

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
