"""``LatestStore`` over Upstash's Redis REST API (aiohttp).

``REDIS_URL=https://<db>.upstash.io`` with ``REDIS_TOKEN``. A batch is sent to ``/pipeline``
as ``["SET", key, value, "EX", ttl]`` commands, split so that one request body stays under
``max_request_bytes`` (default 1 MB, well under Upstash's documented 10 MB limit) and
``max_commands`` commands. Upstash bills every command inside a pipeline, so the flush
interval (``REDIS_FLUSH_INTERVAL_MS``) is what controls cost: see docs/operations.md.

Errors (upstash-rest.md §5–6):

* 401 means the token is wrong: :class:`~polygon_core.errors.StoreRejected`, fatal, with a
  message naming ``REDIS_TOKEN`` (never the token);
* 429, 5xx, timeouts, connection errors and non-JSON replies are retried here with backoff
  (``attempts`` tries), then raised as :class:`~polygon_core.errors.StoreUnavailable`;
* per-command errors in a 200 reply are surfaced: the first one is logged with its key and
  the batch fails (``WRONGPASS``/``NOPERM`` fatally; anything else is retried, which is
  safe since ``SET`` is idempotent).

Plain ``http://`` is accepted only for a loopback host (local test servers); the token
goes in the ``Authorization`` header, never in a URL.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec

from polygon_adapters.lease_scripts import FENCED_SETS, RELEASE, RENEW, Fence, script_time
from polygon_core.errors import LeaseLost, StoreRejected, StoreUnavailable
from polygon_core.keys import LEADER_KEY
from polygon_core.ports import LatestValue

__all__ = ["UpstashLatestStore", "UpstashLease", "validate_upstash_url"]

logger = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode
_decode_reply = msgspec.json.Decoder(list[dict[str, Any]] | dict[str, Any]).decode
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def validate_upstash_url(url: str) -> str:
    """Return ``url`` without a trailing slash, or raise ``ValueError`` saying what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("must be an https:// Upstash REST URL")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError("plain http:// is only accepted for a loopback host; use https://")
    if parts.username or parts.password or parts.query:
        raise ValueError("must not carry credentials or a query; put the token in REDIS_TOKEN")
    return url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class UpstashLatestStore:
    """Latest values through Upstash's ``/pipeline`` endpoint."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout_s: float = 10.0,
        attempts: int = 3,
        backoff_initial_s: float = 0.1,
        max_request_bytes: int = 1_000_000,
        max_commands: int = 1000,
    ) -> None:
        if not token:
            raise ValueError("REDIS_TOKEN is required for an Upstash REST URL")
        self._base = validate_upstash_url(url)
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._own_session = session is None
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._attempts = max(attempts, 1)
        self._backoff_s = backoff_initial_s
        self._max_bytes = max_request_bytes
        self._max_commands = max_commands
        self.description = self._base
        self.requests = 0
        """HTTP requests sent (each pipeline request bills one command per SET)."""
        self.fence: Fence | None = None
        """Set while ``HA_ENABLED``: each chunk is then one fenced, latest-wins ``EVAL``."""
        self.older_refused = 0

    def __repr__(self) -> str:  # never show the token
        return f"UpstashLatestStore({self._base!r})"

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    def lease(self) -> UpstashLease:
        """The leader lease through this store's REST endpoint."""
        return UpstashLease(self)

    async def command(self, *args: str | int) -> Any:
        """One command (``POST /``); returns its ``result``, raises for an ``error``."""
        reply = await self._post("", _encode(list(args)))
        if not isinstance(reply, dict) or "result" not in reply:
            error = reply.get("error") if isinstance(reply, dict) else None
            if error is not None and str(error).startswith(("WRONGPASS", "NOPERM")):
                raise StoreRejected(f"{self._base}: {error}")
            raise StoreUnavailable(f"{self._base}: {error or 'unexpected reply'}")
        return reply["result"]

    async def put_many(self, values: Sequence[LatestValue]) -> None:
        fence = self.fence
        if fence is not None:
            await self._put_fenced(fence, values)
            return
        for chunk in self._chunks(values):
            replies = await self._post("/pipeline", chunk.body)
            self._check_replies(replies, chunk.keys)

    async def _put_fenced(self, fence: Fence, values: Sequence[LatestValue]) -> None:
        step = self._max_commands
        for start in range(0, len(values), step):
            if not fence.holds():
                raise LeaseLost(f"{self._base}: not the leader; nothing written")
            part = values[start : start + step]
            args: list[str | int | float] = ["EVAL", FENCED_SETS, len(part) + 1, fence.key]
            args.extend(v.key for v in part)
            args.append(fence.owner)
            for v in part:
                args.extend((v.value.decode("utf-8"), v.ttl_s, script_time(v)))
            try:
                async with asyncio.timeout(max(fence.remaining_s(), 0.001)):
                    written = await self.command(*args)  # type: ignore[arg-type]
            except TimeoutError:
                raise LeaseLost(f"{self._base}: the fencing deadline came first") from None
            if written == -1:
                raise LeaseLost(f"{self._base}: the lease is held by another task")
            self.older_refused += len(part) - int(written)

    class _Chunk:
        __slots__ = ("body", "keys")

        def __init__(self, body: bytes, keys: list[str]) -> None:
            self.body = body
            self.keys = keys

    def _chunks(self, values: Sequence[LatestValue]) -> list[_Chunk]:
        chunks: list[UpstashLatestStore._Chunk] = []
        parts: list[bytes] = []
        keys: list[str] = []
        size = 2
        for v in values:
            command = _encode(["SET", v.key, v.value.decode("utf-8"), "EX", v.ttl_s])
            if parts and (
                size + len(command) + 1 > self._max_bytes or len(parts) >= self._max_commands
            ):
                chunks.append(self._Chunk(b"[" + b",".join(parts) + b"]", keys))
                parts, keys, size = [], [], 2
            parts.append(command)
            keys.append(v.key)
            size += len(command) + 1
        if parts:
            chunks.append(self._Chunk(b"[" + b",".join(parts) + b"]", keys))
        return chunks

    def _check_replies(self, replies: Any, keys: list[str]) -> None:
        if not isinstance(replies, list) or len(replies) != len(keys):
            raise StoreUnavailable(f"{self._base}: unexpected /pipeline reply shape")
        errors = [(k, r.get("error")) for k, r in zip(keys, replies, strict=True) if "error" in r]
        if not errors:
            return
        key, first = errors[0]
        message = (
            f"{self._base}: {len(errors)} of {len(keys)} SET commands failed (first {key}: {first})"
        )
        logger.error("%s", message)
        if str(first).startswith(("WRONGPASS", "NOPERM")):
            raise StoreRejected(message)
        raise StoreUnavailable(message)

    async def _post(self, path: str, body: bytes) -> Any:
        """POST with retries for transient failures; returns the decoded JSON reply."""
        session = self._get_session()
        delay = self._backoff_s
        last = "no attempt"
        for attempt in range(self._attempts):
            if attempt:
                await asyncio.sleep(delay * (1 - 0.2 * random.random()))
                delay *= 2
            self.requests += 1
            try:
                async with session.post(
                    self._base + path, data=body, headers=self._headers, timeout=self._timeout
                ) as response:
                    raw = await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if status == 401:
                raise StoreRejected(
                    f"{self._base} answered 401: REDIS_TOKEN is missing, wrong or revoked "
                    "(use the database's REST token, not its TCP password)"
                )
            if status in _RETRY_STATUSES:
                last = f"HTTP {status}"
                continue
            try:
                reply = _decode_reply(raw)
            except (msgspec.DecodeError, msgspec.ValidationError):
                last = f"HTTP {status} with a non-JSON body"
                continue
            if status != 200:
                error = reply.get("error") if isinstance(reply, dict) else None
                raise StoreUnavailable(f"{self._base} answered {status}: {error}")
            return reply
        raise StoreUnavailable(f"{self._base}: {last} after {self._attempts} attempts")

    async def read(self, key: str) -> bytes | None:
        """Read one key (for the Redis check)."""
        reply = await self._post("", _encode(["GET", key]))
        if not isinstance(reply, dict) or "result" not in reply:
            raise StoreUnavailable(f"{self._base}: unexpected GET reply")
        result = reply["result"]
        return None if result is None else str(result).encode()

    async def aclose(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None


class UpstashLease:
    """The leader lease over Upstash's REST API (``SET NX PX``, ``EVAL``)."""

    def __init__(self, store: UpstashLatestStore, key: str = LEADER_KEY) -> None:
        self._store = store
        self.key = key

    async def acquire(self, owner: str, ttl_ms: int) -> bool:
        return bool(await self._store.command("SET", self.key, owner, "NX", "PX", ttl_ms) == "OK")

    async def renew(self, owner: str, ttl_ms: int) -> bool:
        return bool(await self._store.command("EVAL", RENEW, 1, self.key, owner, ttl_ms) == 1)

    async def release(self, owner: str) -> bool:
        return bool(await self._store.command("EVAL", RELEASE, 1, self.key, owner) == 1)

    async def holder(self) -> str | None:
        value = await self._store.command("GET", self.key)
        return None if value is None else str(value)
