"""A small Upstash-shaped REST server in front of a real Redis, for tests and benchmarks.

Covers the checklist (section 9) of the Upstash REST protocol reference: ``POST /`` (one
command), ``/pipeline`` (one connection, one RESP pipeline, not atomic), ``/multi-exec``
(MULTI ... EXEC on one connection), path-style commands, Bearer or ``?_token=`` auth,
``Upstash-Encoding: base64``, ``Upstash-Response-Format: resp2``, a sync-token header,
request and key size limits, plus fault switches (:mod:`polygon_testing.upstash_faults`).

Run it: ``python -m polygon_testing.upstash_server --redis-url redis://127.0.0.1:6379/0
--token T --port 8079`` (the token may come from ``UPSTASH_REDIS_REST_TOKEN`` instead).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hmac
import json
import logging
import os
import signal
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote_to_bytes

from aiohttp import web
from redis._parsers import _AsyncRESP2Parser
from redis.asyncio import ConnectionPool
from redis.exceptions import InvalidResponse, RedisError, ResponseError
from yarl import URL

from polygon_testing.upstash_faults import FaultKind, Faults, Stats

__all__ = ["ErrorReply", "StatusReply", "UpstashServer", "main"]

logger = logging.getLogger(__name__)

Command = list[bytes]
ALLOWED_METHODS = frozenset({"HEAD", "GET", "POST", "PUT"})
UNSUPPORTED = frozenset(
    "AUTH HELLO SELECT QUIT RESET CLIENT MONITOR SUBSCRIBE PSUBSCRIBE SSUBSCRIBE UNSUBSCRIBE "
    "PUNSUBSCRIBE SUNSUBSCRIBE MULTI EXEC WATCH UNWATCH DISCARD SYNC PSYNC REPLCONF SHUTDOWN "
    "DEBUG CLUSTER READONLY READWRITE ASKING SWAPDB WAIT WAITAOF BLPOP BRPOP BRPOPLPUSH BLMOVE "
    "BLMPOP BZPOPMIN BZPOPMAX BZMPOP".split()
)
WRONGPASS = "WRONGPASS invalid or missing auth token"
PARSE_ERROR = "ERR failed to parse command"
SYNC_HEADER = "Upstash-Sync-Token"


class _BadRequest(Exception):
    """A request-level failure answered with one ``{"error"}`` and HTTP 400."""


class StatusReply(bytes):
    """A RESP simple string (``+OK``), told apart from a bulk string."""


class ErrorReply(ResponseError):
    """A RESP error reply carrying Redis' full message (``ERR ...``, ``WRONGTYPE ...``)."""


class _TypedRESP2Parser(_AsyncRESP2Parser):
    """RESP2 parser keeping reply kinds: status, full error text, bulk bytes, int, nil."""

    async def _read_response(self, disable_decoding: bool = False) -> Any:
        raw = await self._readline()
        kind, rest = raw[:1], raw[1:]
        if kind == b"+":
            return StatusReply(rest)
        if kind == b"-":
            return ErrorReply(rest.decode("utf-8", errors="replace"))
        if kind == b":":
            return int(rest)
        if kind in (b"$", b"*") and rest == b"-1":
            return None
        if kind == b"$":
            return await self._read(int(rest))
        if kind == b"*":
            return [await self._read_response() for _ in range(int(rest))]
        raise InvalidResponse(f"Protocol Error: {raw!r}")


def to_json(reply: Any, b64: bool) -> Any:
    """Convert a reply the way Upstash does (base64: every string except status ``OK``)."""
    if reply is None or isinstance(reply, int):
        return reply
    if isinstance(reply, ErrorReply):
        return str(reply)
    if isinstance(reply, list):
        return [to_json(item, b64) for item in reply]
    if isinstance(reply, StatusReply) and reply == b"OK":
        return "OK"
    if b64:
        return base64.b64encode(reply).decode("ascii")
    return bytes(reply).decode("utf-8", errors="replace")


def to_resp2(reply: Any) -> bytes:
    if reply is None:
        return b"$-1\r\n"
    if isinstance(reply, ErrorReply):
        return b"-" + str(reply).encode() + b"\r\n"
    if isinstance(reply, int):
        return b":%d\r\n" % reply
    if isinstance(reply, StatusReply):
        return b"+" + reply + b"\r\n"
    if isinstance(reply, list):
        return b"*%d\r\n" % len(reply) + b"".join(to_resp2(item) for item in reply)
    return b"$%d\r\n%s\r\n" % (len(reply), reply)


def _item(reply: Any, b64: bool) -> dict[str, Any]:
    if isinstance(reply, ErrorReply):
        return {"error": str(reply)}
    return {"result": to_json(reply, b64)}


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def _parse_command(value: Any) -> Command:
    if not isinstance(value, list) or not value or not all(isinstance(a, str) for a in value):
        raise ValueError("not a non-empty array of strings and numbers")
    return [arg.encode("utf-8", errors="surrogatepass") for arg in value]


def parse_body(body: bytes, batch: bool) -> list[Command]:
    """JSON body -> commands; numbers keep their decimal text (``parse_int=str``)."""
    value = json.loads(body, parse_int=str, parse_float=str, parse_constant=_reject_constant)
    if not batch:
        return [_parse_command(value)]
    if not isinstance(value, list) or not value:
        raise ValueError("not a non-empty array of commands")
    return [_parse_command(item) for item in value]


def _json(data: Any, status: int = 200) -> web.Response:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return web.json_response(text=text, status=status)


class UpstashServer:
    """Upstash REST front end over ``redis_url``; ``start()`` returns the base URL."""

    def __init__(
        self,
        redis_url: str,
        token: str,
        *,
        max_request_bytes: int = 10_000_000,
        max_key_bytes: int = 32 * 1024,
    ) -> None:
        self._redis_url = redis_url
        self._token = token.encode()
        self.max_request_bytes = max_request_bytes
        self.max_key_bytes = max_key_bytes
        self.faults = Faults()
        self.stats = Stats()
        self._sync_seq = 0
        self._key_specs: dict[bytes, tuple[int, int, int]] | None = None
        self._pool: ConnectionPool | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> UpstashServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._pool = ConnectionPool.from_url(
            self._redis_url, parser_class=_TypedRESP2Parser, protocol=2
        )
        app = web.Application()  # bodies are streamed and counted in _read_body
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # long path-style arguments (keys up to the key limit, URL-encoded) must reach us
        line_bytes = max(8190, 3 * self.max_key_bytes + 1024)
        self._runner = web.AppRunner(app, access_log=None, max_line_size=line_bytes)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.url = f"http://{bound_host}:{bound_port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None

    # -- HTTP ------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.stats.requests += 1
        if request.method not in ALLOWED_METHODS:
            return _json({"error": "ERR method not allowed"}, status=405)
        fault = self.faults.take()
        if delay_s := self.faults.take_delay():
            await asyncio.sleep(delay_s)
        if fault is not None and fault.kind is not FaultKind.DROP_AFTER_EXECUTE:
            self.stats.faults_injected += 1
            status, page = fault.html_reply()
            return web.Response(text=page, status=status, content_type="text/html")
        if not self._authorized(request):
            self.stats.unauthorized += 1
            return _json({"error": WRONGPASS}, status=401)
        if seen := request.headers.get(SYNC_HEADER):
            self.stats.sync_tokens_seen += 1
            self.stats.last_sync_token = seen
        try:
            response = await self._run(request)
        except _BadRequest as exc:
            response = _json({"error": str(exc)}, status=400)
        except (RedisError, OSError) as exc:
            logger.warning("backing Redis failed: %s", exc)
            response = _json({"error": f"ERR backing Redis unavailable: {exc}"}, status=500)
        response.headers[SYNC_HEADER] = str(self._sync_seq)
        if fault is not None:  # DROP_AFTER_EXECUTE: the commands ran, the reply is lost
            self.stats.faults_injected += 1
            if request.transport is not None:
                request.transport.abort()
        return response

    async def _run(self, request: web.Request) -> web.Response:
        b64 = request.headers.get("Upstash-Encoding", "").lower() == "base64"
        fmt = request.headers.get("Upstash-Response-Format", "json").lower()
        if fmt not in ("json", "resp2"):
            raise _BadRequest(f"ERR invalid Upstash-Response-Format: {fmt}")
        if fmt == "resp2" and b64:
            raise _BadRequest("ERR resp2 response format cannot be combined with base64")
        body = await self._read_body(request)
        path = request.rel_url.raw_path.strip("/")
        parts = path.split("/") if path else []
        endpoint = parts[0] if parts in (["pipeline"], ["multi-exec"]) else ""
        if endpoint == "multi-exec" and fmt == "resp2":
            raise _BadRequest("ERR resp2 response format is not supported for multi-exec")
        try:
            if parts and not endpoint:
                commands = [self._path_command(request, parts, body)]
            else:
                commands = parse_body(body, batch=bool(endpoint))
        except (ValueError, UnicodeDecodeError):
            raise _BadRequest(PARSE_ERROR) from None
        self.stats.record([cmd[0].decode(errors="replace") for cmd in commands], endpoint)
        self._sync_seq += 1
        await self._load_key_specs()
        invalid = [self._validate(cmd) for cmd in commands]
        if endpoint == "multi-exec":
            return _json(await self._transaction(commands, invalid, b64))
        runnable = [cmd for cmd, err in zip(commands, invalid, strict=True) if err is None]
        results = iter(await self._execute(runnable) if runnable else [])
        replies = [err if err is not None else next(results) for err in invalid]
        failed = not endpoint and isinstance(replies[0], ErrorReply)
        if fmt == "resp2":
            data = b"".join(to_resp2(reply) for reply in replies)
            return web.Response(
                body=data, status=400 if failed else 200,
                content_type="application/octet-stream",
            )  # fmt: skip
        items = [_item(reply, b64) for reply in replies]
        return _json(items if endpoint else items[0], status=400 if failed else 200)

    async def _transaction(
        self, commands: list[Command], invalid: list[ErrorReply | None], b64: bool
    ) -> list[dict[str, Any]]:
        """MULTI ... EXEC; a discard-class failure raises ``_BadRequest`` (one error)."""
        if first := next((err for err in invalid if err is not None), None):
            raise _BadRequest(str(first))
        *queued, result = (await self._execute([[b"MULTI"], *commands, [b"EXEC"]]))[1:]
        errors = [reply for reply in queued if isinstance(reply, ErrorReply)]
        if errors or not isinstance(result, list):
            raise _BadRequest(str(errors[0] if errors else result))
        return [_item(reply, b64) for reply in result]

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        candidates = [request.query.get("_token", "")]
        if header[:7].lower() == "bearer ":
            candidates.append(header[7:].strip())
        return any(hmac.compare_digest(c.encode(), self._token) for c in candidates if c)

    async def _read_body(self, request: web.Request) -> bytes:
        """The body, counting the request line against the limit (\"whole request\")."""
        limit = self.max_request_bytes - len(request.raw_path)
        if request.content_length is not None and request.content_length > limit:
            raise _BadRequest("ERR max request size exceeded")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > limit:
                raise _BadRequest("ERR max request size exceeded")
            chunks.append(chunk)
        return b"".join(chunks)

    def _path_command(self, request: web.Request, parts: Sequence[str], body: bytes) -> Command:
        command = [unquote_to_bytes(part) for part in parts]
        if request.method in ("POST", "PUT") and body:
            command.append(body)
        for name, value in request.query.items():
            if name != "_token":
                command.extend([name.encode(), value.encode()] if value else [name.encode()])
        return command

    # -- Redis -----------------------------------------------------------------------

    def _validate(self, command: Command) -> ErrorReply | None:
        name = command[0].upper()
        if name.decode(errors="replace") in UNSUPPORTED or (
            name in (b"XREAD", b"XREADGROUP") and b"BLOCK" in (a.upper() for a in command)
        ):
            return ErrorReply(
                f"ERR Command is not available: '{command[0].decode(errors='replace')}'"
            )
        for key in self._keys(name, command):
            if len(key) > self.max_key_bytes:
                return ErrorReply(
                    f"ERR max key size exceeded. Limit: {self.max_key_bytes} bytes, "
                    f"Actual: {len(key)} bytes"
                )
        return None

    def _keys(self, name: bytes, command: Command) -> list[bytes]:
        first, last, step = (self._key_specs or {}).get(name.lower(), (1, 1, 1))
        if first <= 0 or step <= 0:
            return []
        stop = last if last > 0 else len(command) + last
        return command[first : stop + 1 : step]

    async def _execute(self, commands: list[Command]) -> list[Any]:
        """Send ``commands`` as one RESP pipeline on one connection; replies in order."""
        if self._pool is None:
            raise RuntimeError("UpstashServer is not started")
        conn = await self._pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.send_packed_command(conn.pack_commands(commands))
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await conn.read_response(disable_decoding=True))
                except ErrorReply as exc:
                    replies.append(exc)
            return replies
        finally:
            await self._pool.release(conn)

    async def _load_key_specs(self) -> None:
        """Key positions (first, last, step) per command, from Redis' ``COMMAND``."""
        if self._key_specs is None:
            (table,) = await self._execute([[b"COMMAND"]])
            rows = table if isinstance(table, list) else []
            self._key_specs = {bytes(r[0]).lower(): (r[3], r[4], r[5]) for r in rows}


async def _serve(args: argparse.Namespace, token: str) -> None:
    server = UpstashServer(args.redis_url, token, max_request_bytes=args.max_request_bytes)
    url = await server.start(args.host, args.port)
    redis_at = URL(args.redis_url).with_user(None)  # never log credentials
    logger.info("Upstash-shaped REST server on %s (backing Redis %s)", url, redis_at)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        stats = server.stats
        logger.info("stopping; served %d requests, %d commands", stats.requests, stats.commands)
        await server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m polygon_testing.upstash_server",
        description="Serve the Upstash Redis REST API in front of a real Redis (tests, demos).",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--token",
        default=os.environ.get("UPSTASH_REDIS_REST_TOKEN"),
        help="REST token (default: $UPSTASH_REDIS_REST_TOKEN)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8079)
    parser.add_argument("--max-request-bytes", type=int, default=10_000_000)
    args = parser.parse_args(argv)
    if not args.token:
        parser.error("--token or UPSTASH_REDIS_REST_TOKEN is required")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(_serve(args, args.token))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
