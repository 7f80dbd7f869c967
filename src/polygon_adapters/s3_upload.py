"""S3 plumbing for the archive: the client factory, retries and error translation.

:func:`open_s3_client` opens an aiobotocore S3 client the way the archive expects it:
credentials from the standard AWS chain (environment, shared files, the ECS task role),
``AWS_REGION``, and ``S3_ENDPOINT_URL`` for any S3-compatible server (path-style addressing
then, and checksums only where S3 requires them, which MinIO, moto and LocalStack accept).
botocore's own retries are off (one attempt per call): :class:`S3Requests` retries every
call itself, with exponential backoff and jitter, so one policy covers throttling,
connection errors and 5xx answers, and an outage is logged once when it starts and once
when it ends.

Errors that escape become :class:`~polygon_core.errors.ArchiveError`. A few S3 error codes
mean retrying the same request cannot succeed (the upload is gone, a part is invalid);
:func:`is_permanent` names them. Everything else (connection refused, timeouts, 5xx,
``SlowDown``, and also ``AccessDenied`` or ``NoSuchBucket``, which an operator can fix
while the archive buffers) is retried, except where the caller asks for configuration
errors to be fatal (start-up recovery, the archive's first calls): then
:func:`misconfiguration` names what no retry can fix (no such bucket, access denied,
rejected or missing credentials, the wrong region) and the call raises
:class:`~polygon_core.errors.ArchiveMisconfigured` with a hint.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp

# aiobotocore and botocore ship no type information: their names are ``Any`` here.
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    ParamValidationError,
)

from polygon_core.backoff import backoff_delays
from polygon_core.errors import ArchiveError, ArchiveMisconfigured

__all__ = [
    "CONTENT_TYPE",
    "S3Requests",
    "S3RetryPolicy",
    "TRANSPORT_ERRORS",
    "error_code",
    "is_permanent",
    "describe",
    "misconfiguration",
    "open_s3_client",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")

CONTENT_TYPE = "application/x-ndjson"
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    ClientError,
    BotoCoreError,
    aiohttp.ClientError,
    OSError,
    TimeoutError,
)
"""What an S3 call can raise besides cancellation: botocore, aiohttp and socket errors."""

_PERMANENT_CODES = frozenset(
    {
        "NoSuchUpload",
        "InvalidPart",
        "InvalidPartOrder",
        "EntityTooSmall",
        "EntityTooLarge",
        "InvalidArgument",
        "MalformedXML",
    }
)


_CONFIG_HINTS = {
    "NoSuchBucket": "the bucket does not exist (check S3_BUCKET, AWS_REGION, S3_ENDPOINT_URL)",
    "InvalidBucketName": "the bucket name is invalid (check S3_BUCKET)",
    "AccessDenied": "access denied (the credentials or task role lack S3 permissions on "
    "the bucket; see docs/operations.md)",
    "AllAccessDisabled": "all access to the bucket is disabled",
    "InvalidAccessKeyId": "the AWS access key id is not known (bad credentials)",
    "SignatureDoesNotMatch": "the AWS secret key does not match the key id (bad credentials)",
    "AuthorizationHeaderMalformed": "the request was signed for the wrong region (check "
    "AWS_REGION)",
    "PermanentRedirect": "the bucket is in another region (check AWS_REGION)",
}
"""S3 error codes that no retry can fix, with what to tell the operator."""


@asynccontextmanager
async def open_s3_client(
    region: str | None,
    endpoint_url: str | None = None,
    *,
    session: AioSession | None = None,
    connect_timeout_s: float = 5.0,
    read_timeout_s: float = 60.0,
    max_pool_connections: int = 16,
) -> AsyncIterator[Any]:
    """An aiobotocore S3 client for the archive, closed on exit.

    ``region`` is ``AWS_REGION`` (``None``: the session's default); ``endpoint_url`` is
    ``S3_ENDPOINT_URL`` (``None`` or empty: AWS). Credentials come from ``session`` (by
    default a fresh :func:`aiobotocore.session.get_session`, i.e. the standard chain);
    they are never logged.
    """
    options: dict[str, Any] = {
        "connect_timeout": connect_timeout_s,
        "read_timeout": read_timeout_s,
        "retries": {"mode": "standard", "total_max_attempts": 1},
        "max_pool_connections": max_pool_connections,
    }
    if endpoint_url:
        options["s3"] = {"addressing_style": "path"}
        options["request_checksum_calculation"] = "when_required"
        options["response_checksum_validation"] = "when_required"
    config = AioConfig(**options)
    session = session or get_session()
    async with session.create_client(
        "s3", region_name=region or None, endpoint_url=endpoint_url or None, config=config
    ) as client:
        yield client


def error_code(exc: BaseException) -> str | None:
    """The S3 error code of a ``ClientError`` (``NoSuchUpload``, ``SlowDown``...), else None."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None


def is_permanent(exc: BaseException) -> bool:
    """True when retrying the same request cannot succeed (see the module docstring)."""
    return isinstance(exc, ParamValidationError) or error_code(exc) in _PERMANENT_CODES


def misconfiguration(exc: BaseException) -> str | None:
    """What is wrong with the configuration when ``exc`` says so (see ``_CONFIG_HINTS``;
    also: no credentials found at all), else None."""
    if isinstance(exc, NoCredentialsError):
        return "no AWS credentials found (environment, shared files or the task role)"
    code = error_code(exc)
    return _CONFIG_HINTS.get(code) if code is not None else None


def describe(exc: BaseException) -> str:
    """A short, credential-free description of an S3 failure for logs and errors."""
    code = error_code(exc)
    if code is not None:
        return f"{code} (HTTP {_status(exc)})"
    return f"{type(exc).__name__}: {exc}"[:300]


def _status(exc: BaseException) -> object:
    if isinstance(exc, ClientError):
        return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
    return "?"


@dataclass(frozen=True, slots=True)
class S3RetryPolicy:
    """Backoff between attempts of one S3 call: ``initial_s * factor**n`` up to ``max_s``,
    minus up to ``jitter`` of it at random.

    Background uploads retry until they succeed or the shutdown deadline passes; start-up
    recovery gives up after ``recovery_attempts`` (then start-up fails with
    ``ArchiveError``, e.g. on a wrong bucket).
    """

    initial_s: float = 0.2
    factor: float = 2.0
    max_s: float = 1.0
    jitter: float = 0.2
    recovery_attempts: int = 5

    def __post_init__(self) -> None:
        backoff_delays(self.initial_s * 1000, self.factor, self.max_s * 1000, random.random)
        if not 0 <= self.jitter <= 1 or self.recovery_attempts < 1:
            raise ValueError("jitter must be in 0..1 and recovery_attempts at least 1")

    def delays(self, rng: Callable[[], float]) -> Iterator[float]:
        return backoff_delays(
            self.initial_s * 1000, self.factor, self.max_s * 1000, rng, self.jitter
        )


class S3Requests:
    """Runs S3 calls with retries, counts them, and logs outages once (start and end).

    ``on_retry`` is called once per failed attempt that will be retried (for stats).
    """

    def __init__(
        self,
        retry: S3RetryPolicy,
        *,
        on_retry: Callable[[], None],
        rng: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._retry = retry
        self._on_retry = on_retry
        self._rng = rng
        self._sleep = sleep
        self._outage_since: float | None = None
        self._outage_failures = 0

    @property
    def in_outage(self) -> bool:
        return self._outage_since is not None

    async def call(
        self,
        what: str,
        request: Callable[[], Awaitable[T]],
        *,
        attempts: int | None = None,
        config_fatal: bool = False,
    ) -> T:
        """Await ``request()`` until it succeeds; ``attempts=None`` retries without end.

        A permanent error, or the last allowed attempt failing, raises ``ArchiveError``
        (chained to the library's exception); with ``config_fatal``, an error that says the
        configuration is wrong raises ``ArchiveMisconfigured`` at once. Cancellation passes
        through.
        """
        delays = None
        attempt = 0
        while True:
            attempt += 1
            try:
                result = await request()
            except TRANSPORT_ERRORS as exc:
                wrong = misconfiguration(exc) if config_fatal else None
                if wrong is not None:
                    raise ArchiveMisconfigured(f"S3 {what}: {wrong} [{describe(exc)}]") from exc
                if is_permanent(exc) or (attempts is not None and attempt >= attempts):
                    raise ArchiveError(f"S3 {what} failed: {describe(exc)}") from exc
                self._failed(what, exc)
                if delays is None:
                    delays = self._retry.delays(self._rng)
                await self._sleep(next(delays))
                continue
            self._succeeded()
            return result

    def _failed(self, what: str, exc: BaseException) -> None:
        self._on_retry()
        self._outage_failures += 1
        if self._outage_since is None:
            self._outage_since = asyncio.get_running_loop().time()
            logger.error(
                "S3 %s failed (%s); retrying with backoff, lines stay buffered in memory",
                what,
                describe(exc),
            )
        else:
            logger.debug("S3 %s failed again (%s)", what, describe(exc))

    def _succeeded(self) -> None:
        if self._outage_since is None:
            return
        elapsed = asyncio.get_running_loop().time() - self._outage_since
        logger.warning(
            "S3 reachable again after %.1f s (%d failed attempts); uploads resumed",
            elapsed,
            self._outage_failures,
        )
        self._outage_since = None
        self._outage_failures = 0
