"""The local Upstash-shaped REST server: faithful to Redis and to the Upstash protocol.

Drives ``polygon_testing.upstash_server`` with the official ``upstash_redis`` SDK and with
raw HTTP, against a private ``redis-server`` (never the shared one on 6379). The server
uses DB 0; a direct redis-py client on DB 1 replays the same operations for comparison.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.exceptions import ResponseError
from upstash_redis.asyncio import Redis as UpstashRedis
from upstash_redis.errors import UpstashError

from polygon_testing.upstash_server import UpstashServer
from tests.redis_servers import RedisServerProcess, redis_server_available

pytestmark = pytest.mark.integration

TOKEN = "local-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
B64 = {**AUTH, "Upstash-Encoding": "base64"}


def _b64(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return base64.b64encode(data).decode()


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def needs_redis_server() -> None:
    """Skip without a redis-server binary; under CI=true that is a failure."""
    if not redis_server_available():
        reason = "redis-server binary not found (install redis or set $REDIS_SERVER)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def redis_process(needs_redis_server: None) -> Iterator[RedisServerProcess]:
    with RedisServerProcess() as process:
        yield process


@pytest.fixture
async def direct(redis_process: RedisServerProcess) -> AsyncIterator[aioredis.Redis]:
    """redis-py on DB 1 (the reference); flushes both DBs of the private server."""
    client = aioredis.Redis(port=redis_process.port, db=1, decode_responses=True)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
async def raw_db0(redis_process: RedisServerProcess) -> AsyncIterator[aioredis.Redis]:
    """redis-py on DB 0: reads behind the REST server's back."""
    client = aioredis.Redis(port=redis_process.port, db=0)
    yield client
    await client.aclose()


ServerFactory = Callable[..., Awaitable[UpstashServer]]


@pytest.fixture
async def make_server(
    redis_process: RedisServerProcess, direct: aioredis.Redis
) -> AsyncIterator[ServerFactory]:
    started: list[UpstashServer] = []

    async def factory(**kwargs: Any) -> UpstashServer:
        server = UpstashServer(redis_process.url, TOKEN, **kwargs)
        await server.start()
        started.append(server)
        return server

    yield factory
    for server in started:
        await server.stop()


@pytest.fixture
async def server(make_server: ServerFactory) -> UpstashServer:
    return await make_server()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def sdk(server: UpstashServer) -> AsyncIterator[UpstashRedis]:
    client = UpstashRedis(server.url, TOKEN, rest_retries=0)  # base64 on by default
    yield client
    await client.close()


async def call(
    http: aiohttp.ClientSession,
    server: UpstashServer,
    body: Any = None,
    *,
    path: str = "/",
    method: str = "POST",
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> tuple[int, Any, aiohttp.ClientResponse]:
    """One raw request; returns (status, parsed JSON or raw bytes, response)."""
    payload = data if data is not None else (json.dumps(body).encode() if body else None)
    hdrs = AUTH if headers is None else headers
    async with http.request(method, server.url + path, data=payload, headers=hdrs) as resp:
        raw = await resp.read()
        parsed = json.loads(raw) if resp.content_type == "application/json" and raw else raw
        return resp.status, parsed, resp


# -- faithfulness: official SDK vs direct Redis -------------------------------------------


async def outcome(awaitable: Awaitable[Any]) -> Any:
    """A result, or ("error", message) with the Redis error code restored for redis-py."""
    try:
        return await awaitable
    except UpstashError as exc:
        return ("error", str(exc))
    except ResponseError as exc:
        code = exc.status_code
        return ("error", f"{code} {exc}" if code else str(exc))


async def _truthy(awaitable: Awaitable[Any]) -> bool:
    return bool(await awaitable)


async def test_sdk_matches_redis_for_basic_commands(
    sdk: UpstashRedis, direct: aioredis.Redis
) -> None:
    async def both(op: Callable[[Any], Awaitable[Any]]) -> tuple[Any, Any]:
        return await outcome(op(sdk)), await outcome(op(direct))

    script: list[Callable[[Any], Awaitable[Any]]] = [
        lambda c: c.set("k:a", "héllo ✓"),
        lambda c: c.get("k:a"),
        lambda c: c.get("k:missing"),
        lambda c: c.set("k:b", '{"px":189.5}', ex=100),
        lambda c: c.ttl("k:b"),
        lambda c: c.ttl("k:a"),
        lambda c: c.ttl("k:missing"),
        lambda c: c.incr("k:n"),
        lambda c: c.incr("k:n"),
        lambda c: c.incrby("k:n", 40),
        lambda c: c.incr("k:a"),  # error: not an integer
        lambda c: c.mget("k:a", "k:missing", "k:n"),
        lambda c: c.exists("k:a", "k:b", "k:missing"),
        lambda c: _truthy(c.set("k:a", "x", nx=True)),  # refused: SDK False, redis-py None
        lambda c: c.set("k:a", "y", xx=True, get=True),
        lambda c: c.delete("k:a", "k:missing"),
        lambda c: c.exists("k:a"),
        lambda c: c.lpush("k:b", "x"),  # WRONGTYPE
    ]
    for step, op in enumerate(script):
        via_rest, via_redis = await both(op)
        assert via_rest == via_redis, f"step {step}"


async def test_sdk_pipeline_and_multi_match_redis(
    sdk: UpstashRedis, direct: aioredis.Redis, server: UpstashServer
) -> None:
    for transaction in (False, True):
        rest = sdk.multi() if transaction else sdk.pipeline()
        ref = direct.pipeline(transaction=transaction)
        for client in (rest, ref):
            client.set("p:a", "1", ex=50)
            client.incr("p:a")
            client.get("p:a")
            client.mget("p:a", "p:none")
            client.exists("p:a", "p:none")
            client.ttl("p:a")
            client.delete("p:a")
            client.get("p:a")
        assert await rest.exec() == await ref.execute()
    assert (server.stats.pipelines, server.stats.transactions) == (1, 1)
    assert server.stats.commands == 16


async def test_sdk_pipeline_error_item_raises_although_others_ran(
    sdk: UpstashRedis, raw_db0: aioredis.Redis
) -> None:
    # Surprise worth knowing: the SDK raises on the first {"error"} item of a pipeline,
    # discarding the other results, although the server ran every command.
    pipe = sdk.pipeline()
    pipe.set("e:s", "text")
    pipe.incr("e:s")
    pipe.set("e:after", "ran")
    with pytest.raises(UpstashError, match="not an integer"):
        await pipe.exec()
    assert await raw_db0.get("e:after") == b"ran"


async def test_sdk_echoes_sync_token(sdk: UpstashRedis, server: UpstashServer) -> None:
    await sdk.set("s:a", "1")
    await sdk.get("s:a")
    assert (server.stats.sync_tokens_seen, server.stats.last_sync_token) == (1, "1")


async def _raise(exc: Exception) -> None:
    raise exc


OPS = st.one_of(
    st.tuples(st.just("set"), st.sampled_from("abc"), st.text(max_size=8) | st.integers(-5, 5)),
    st.tuples(st.just("get"), st.sampled_from("abc")),
    st.tuples(st.just("delete"), st.sampled_from("abc")),
    st.tuples(st.just("incr"), st.sampled_from("abc")),
    st.tuples(st.just("append"), st.sampled_from("abc"), st.text(max_size=4)),
    st.tuples(st.just("exists"), st.sampled_from("abc")),
    st.tuples(st.just("mget"), st.sampled_from("abc")),
)


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(OPS, max_size=12), batched=st.booleans())
async def test_random_sequences_match_redis(
    sdk: UpstashRedis, direct: aioredis.Redis, ops: list[tuple[Any, ...]], batched: bool
) -> None:
    await direct.flushall()  # both DBs: each example starts from an empty key space
    if batched and ops:
        rest = sdk.pipeline()
        ref = direct.pipeline(transaction=False)
        for name, key, *args in ops:
            for client in (rest, ref):
                getattr(client, name)(*([key, "z"] if name == "mget" else [key]), *args)
        replies = await ref.execute(raise_on_error=False)
        first_error = next((r for r in replies if isinstance(r, ResponseError)), None)
        # the SDK raises on the first error item; otherwise the whole lists must match
        expected = await outcome(_raise(first_error)) if first_error else replies
        assert await outcome(rest.exec()) == expected
        return
    for name, key, *args in ops:
        keys = [key, "z"] if name == "mget" else [key]
        via_rest = await outcome(getattr(sdk, name)(*keys, *args))
        via_redis = await outcome(getattr(direct, name)(*keys, *args))
        assert via_rest == via_redis, (name, key, args)


# -- raw HTTP: protocol details -----------------------------------------------------------


async def test_auth(http: aiohttp.ClientSession, server: UpstashServer) -> None:
    unauthorized = {"error": "WRONGPASS invalid or missing auth token"}
    assert (await call(http, server, ["PING"], headers={}))[:2] == (401, unauthorized)
    wrong = {"Authorization": "Bearer nope"}
    assert (await call(http, server, ["PING"], headers=wrong))[:2] == (401, unauthorized)
    path = "/?_token=nope"
    assert (await call(http, server, ["PING"], path=path, headers={}))[:2] == (401, unauthorized)
    path = f"/get/k?_token={TOKEN}"
    assert (await call(http, server, path=path, method="GET", headers={}))[:2] == (
        200,
        {"result": None},
    )
    assert (await call(http, server, ["PING"], headers={}, path=f"/?_token={TOKEN}"))[:2] == (
        200,
        {"result": "PONG"},
    )
    assert server.stats.unauthorized == 3


@pytest.mark.parametrize("method", ["PATCH", "DELETE", "OPTIONS"])
async def test_other_methods_are_405(
    http: aiohttp.ClientSession, server: UpstashServer, method: str
) -> None:
    status, _body, _ = await call(http, server, path="/get/k", method=method)
    assert status == 405


async def test_head_get_put_accepted(http: aiohttp.ClientSession, server: UpstashServer) -> None:
    assert (await call(http, server, path="/set/h/1", method="PUT"))[:2] == (200, {"result": "OK"})
    assert (await call(http, server, path="/get/h", method="GET"))[:2] == (200, {"result": "1"})
    status, body, resp = await call(http, server, path="/get/h", method="HEAD")
    assert (status, body, resp.content_type) == (200, b"", "application/json")


async def test_single_command_results_and_errors(
    http: aiohttp.ClientSession, server: UpstashServer
) -> None:
    assert (await call(http, server, ["SET", "n", 10]))[:2] == (200, {"result": "OK"})
    assert (await call(http, server, ["INCRBY", "n", 5]))[:2] == (200, {"result": 15})
    assert (await call(http, server, ["INCRBYFLOAT", "f", 1.5]))[:2] == (200, {"result": "1.5"})
    wrong_args = {"error": "ERR wrong number of arguments for 'get' command"}
    assert (await call(http, server, ["get"]))[:2] == (400, wrong_args)
    assert (await call(http, server, ["WATCH", "n"]))[0] == 400
    for bad in (b"not json", b"[]", b'{"a":1}', b'["SET","k",true]', b'["SET","k",null]'):
        status, body, _ = await call(http, server, data=bad)
        assert (status, set(body)) == (400, {"error"}), bad


async def test_any_content_type_is_parsed_as_json(
    http: aiohttp.ClientSession, server: UpstashServer
) -> None:
    for content_type in ("application/x-www-form-urlencoded", "text/plain", None):
        headers = {**AUTH, **({"Content-Type": content_type} if content_type else {})}
        data = b'["ECHO","hi"]'
        assert (await call(http, server, data=data, headers=headers))[:2] == (200, {"result": "hi"})


async def test_path_style_commands(
    http: aiohttp.ClientSession, server: UpstashServer, raw_db0: aioredis.Redis
) -> None:
    assert (await call(http, server, path="/set/foo/bar/EX/100", method="GET"))[1] == {
        "result": "OK"
    }
    assert await raw_db0.ttl("foo") == 100
    assert (await call(http, server, path="/set/a%2Fb/x%20y", method="GET"))[1] == {"result": "OK"}
    assert await raw_db0.get("a/b") == b"x y"
    # POST: the raw body is the last argument; query arguments follow it, in order
    body = b'{"px": 189.5, "raw": "\xff"}'
    status, result, _ = await call(http, server, path="/set/quote?EX=30&NX", data=body)
    assert (status, result) == (200, {"result": "OK"})
    assert await raw_db0.get("quote") == body
    assert 0 < await raw_db0.ttl("quote") <= 30
    assert (await call(http, server, path="/set/quote?XX", data=b"v2"))[1] == {"result": "OK"}
    assert await raw_db0.get("quote") == b"v2"
    assert (await call(http, server, path="/mget/foo/quote/none", method="GET"))[1] == {
        "result": ["bar", "v2", None]
    }


async def test_invalid_utf8_is_replaced_unless_base64(
    http: aiohttp.ClientSession, server: UpstashServer
) -> None:
    await call(http, server, path="/set/bin", data=b"\xff\x00ok")
    assert (await call(http, server, ["GET", "bin"]))[1] == {"result": "\ufffd\x00ok"}
    assert (await call(http, server, ["GET", "bin"], headers=B64))[1] == {
        "result": _b64(b"\xff\x00ok")
    }


async def test_base64_encoding_rules(http: aiohttp.ClientSession, server: UpstashServer) -> None:
    async def b64(*command: Any) -> Any:
        return (await call(http, server, list(command), headers=B64))[1]

    assert await b64("SET", "k", "OK") == {"result": "OK"}  # the status reply: not encoded
    assert await b64("GET", "k") == {"result": _b64("OK")}  # a bulk string "OK": encoded
    assert await b64("SET", "n", "41") == {"result": "OK"}
    assert await b64("INCR", "n") == {"result": 42}  # integers untouched
    assert await b64("GET", "missing") == {"result": None}  # null untouched
    assert await b64("MGET", "k", "missing") == {"result": [_b64("OK"), None]}
    assert await b64("RPUSH", "l", "a", "b") == {"result": 2}
    assert await b64("LRANGE", "l", 0, -1) == {"result": [_b64("a"), _b64("b")]}
    assert await b64("INCR", "k") == {"error": "ERR value is not an integer or out of range"}
    # other status replies are strings too, so they are encoded (the SDKs decode every
    # string except "OK")
    assert await b64("PING") == {"result": _b64("PONG")}
    assert await b64("TYPE", "l") == {"result": _b64("list")}


async def test_pipeline_items_fail_independently(
    http: aiohttp.ClientSession, server: UpstashServer, raw_db0: aioredis.Redis
) -> None:
    commands = [
        ["SET", "k1", "v1", "EX", 30],
        ["INCR", "k1"],
        ["NOSUCHCOMMAND"],
        ["WATCH", "k1"],
        ["SET", "k" * 40, "ok"],
        ["GET", "k1"],
    ]
    status, body, _ = await call(http, server, commands, path="/pipeline")
    assert status == 200
    assert body[0] == {"result": "OK"}
    assert body[1] == {"error": "ERR value is not an integer or out of range"}
    assert body[2]["error"].startswith("ERR unknown command 'NOSUCHCOMMAND'")
    assert set(body[3]) == {"error"}
    assert body[4:] == [{"result": "OK"}, {"result": "v1"}]
    assert await raw_db0.get("k" * 40) == b"ok"
    assert (server.stats.pipelines, server.stats.commands) == (1, 6)


async def test_multi_exec(
    http: aiohttp.ClientSession, server: UpstashServer, raw_db0: aioredis.Redis
) -> None:
    ok = [["SET", "t1", "a"], ["INCR", "t2"], ["LPUSH", "t1", "x"], ["GET", "t1"]]
    status, body, _ = await call(http, server, ok, path="/multi-exec", headers=B64)
    assert status == 200
    assert body[:2] == [{"result": "OK"}, {"result": 1}]
    assert body[2]["error"].startswith("WRONGTYPE")  # run-time error: the rest still ran
    assert body[3] == {"result": _b64("a")}
    # discard-class: a command Redis refuses to queue -> one error, nothing executed
    discarded = [["SET", "t3", "a"], ["NOSUCHCOMMAND", "x"]]
    status, body, _ = await call(http, server, discarded, path="/multi-exec")
    assert status == 400 and body["error"].startswith("ERR unknown command")
    assert await raw_db0.exists("t3") == 0
    # unsupported commands and oversized keys discard the whole transaction as well
    for bad in (["WATCH", "t1"], ["SET", "x" * (32 * 1024 + 1), "v"]):
        status, body, _ = await call(http, server, [["SET", "t3", "a"], bad], path="/multi-exec")
        assert status == 400 and set(body) == {"error"}
        assert await raw_db0.exists("t3") == 0


async def test_size_limits(
    http: aiohttp.ClientSession, make_server: ServerFactory, raw_db0: aioredis.Redis
) -> None:
    server = await make_server(max_request_bytes=2000)
    big = {"error": "ERR max request size exceeded"}
    assert (await call(http, server, ["SET", "k", "v" * 3000]))[:2] == (400, big)
    assert (await call(http, server, path="/set/k", data=b"v" * 3000))[:2] == (400, big)
    assert (await call(http, server, ["SET", "k", "v" * 1000]))[:2] == (200, {"result": "OK"})

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while reading
        yield b'["SET","k","'
        for _ in range(30):
            yield b"v" * 100
        yield b'"]'

    async with http.post(server.url, data=chunks(), headers=AUTH) as resp:
        assert (resp.status, await resp.json()) == (400, big)

    server = await make_server()  # defaults: 10 MB request, 32 KB key
    limit = 32 * 1024
    at_limit = "k" * limit
    assert (await call(http, server, ["SET", at_limit, "v"]))[1] == {"result": "OK"}
    too_long = {"error": f"ERR max key size exceeded. Limit: {limit} bytes, Actual: 32769 bytes"}
    assert (await call(http, server, ["SET", at_limit + "k", "v"]))[:2] == (400, too_long)
    assert (await call(http, server, ["DEL", "a", at_limit + "k"]))[:2] == (400, too_long)
    path = f"/get/{at_limit}k"  # path-style: long request lines reach the check too
    assert (await call(http, server, path=path, method="GET"))[:2] == (400, too_long)
    assert (await call(http, server, ["MSET", "a", "1", at_limit + "k", "2"]))[0] == 400
    assert (await call(http, server, ["SET", "small", "v" * 40_000]))[0] == 200  # values: fine
    assert await raw_db0.exists("a") == 0
    huge = io.BytesIO(b'["SET","k","' + b"v" * 10_000_000 + b'"]')
    async with http.post(server.url, data=huge, headers=AUTH) as resp:
        assert (resp.status, await resp.json()) == (400, big)


async def test_sync_token_header(http: aiohttp.ClientSession, server: UpstashServer) -> None:
    tokens = []
    for _ in range(3):
        _status, _body, resp = await call(http, server, ["PING"])
        tokens.append(resp.headers["Upstash-Sync-Token"])
    assert len(set(tokens)) == 3
    headers = {**AUTH, "Upstash-Sync-Token": tokens[-1]}
    assert (await call(http, server, ["PING"], headers=headers))[:2] == (200, {"result": "PONG"})
    assert (server.stats.sync_tokens_seen, server.stats.last_sync_token) == (1, tokens[-1])


async def test_resp2_response_format(http: aiohttp.ClientSession, server: UpstashServer) -> None:
    resp2 = {**AUTH, "Upstash-Response-Format": "resp2"}
    status, body, resp = await call(http, server, ["SET", "foo", "bar"], headers=resp2)
    assert (status, body, resp.content_type) == (200, b"+OK\r\n", "application/octet-stream")
    assert (await call(http, server, ["GET", "foo"], headers=resp2))[1] == b"$3\r\nbar\r\n"
    assert (await call(http, server, ["GET", "none"], headers=resp2))[1] == b"$-1\r\n"
    assert (await call(http, server, ["MGET", "foo", "x"], headers=resp2))[1] == (
        b"*2\r\n$3\r\nbar\r\n$-1\r\n"
    )
    assert (await call(http, server, ["INCR", "foo"], headers=resp2))[:2] == (
        400,
        b"-ERR value is not an integer or out of range\r\n",
    )
    status, body, _ = await call(http, server, [["INCR", "n"]], path="/pipeline", headers=resp2)
    assert (status, body) == (200, b":1\r\n")
    for headers in ({**AUTH, "Upstash-Response-Format": "xml"}, {**resp2, **B64}):
        status, body, _ = await call(http, server, ["GET", "foo"], headers=headers)
        assert status == 400 and set(body) == {"error"}
    status, _body, _ = await call(http, server, [["GET", "foo"]], path="/multi-exec", headers=resp2)
    assert status == 400


async def test_stats_count_requests_and_commands(
    http: aiohttp.ClientSession, server: UpstashServer
) -> None:
    await call(http, server, ["SET", "a", "1"])
    await call(http, server, [["GET", "a"], ["GET", "b"], ["INCR", "c"]], path="/pipeline")
    await call(http, server, [["GET", "a"], ["GET", "b"]], path="/multi-exec")
    await call(http, server, ["GET", "a"], headers={})  # unauthorized: no command
    stats = server.stats
    assert (stats.requests, stats.commands, stats.unauthorized) == (4, 6, 1)
    assert (stats.single_requests, stats.pipelines, stats.transactions) == (1, 1, 1)
    assert stats.by_command == {"SET": 1, "GET": 4, "INCR": 1}
    stats.reset()
    assert (stats.requests, stats.commands, dict(stats.by_command)) == (0, 0, {})


# -- fault switches -------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 502])
async def test_fail_next_returns_html_without_executing(
    http: aiohttp.ClientSession, server: UpstashServer, raw_db0: aioredis.Redis, status: int
) -> None:
    server.faults.fail_next(status, times=2)
    for _ in range(2):
        got, body, resp = await call(http, server, ["INCR", "f"])
        assert (got, resp.content_type) == (status, "text/html")
        assert body.startswith(b"<html>")
    assert await raw_db0.get("f") is None
    assert (await call(http, server, ["INCR", "f"]))[:2] == (200, {"result": 1})
    assert server.stats.faults_injected == 2 and server.faults.pending == 0


async def test_non_json_200(http: aiohttp.ClientSession, server: UpstashServer) -> None:
    server.faults.non_json_next()
    status, body, resp = await call(http, server, ["SET", "j", "1"])
    assert (status, resp.content_type) == (200, "text/html")
    with pytest.raises(ValueError):
        json.loads(body)
    assert (await call(http, server, ["GET", "j"]))[1] == {"result": None}


async def test_delay(http: aiohttp.ClientSession, server: UpstashServer) -> None:
    server.faults.delay(0.3, times=1)
    started = time.monotonic()
    assert (await call(http, server, ["PING"]))[0] == 200
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    await call(http, server, ["PING"])
    assert time.monotonic() - started < 0.3
    server.faults.delay(1.0)
    with pytest.raises(asyncio.TimeoutError):
        async with asyncio.timeout(0.2):
            await call(http, server, ["PING"])
    server.faults.reset()


async def test_drop_after_execute(
    http: aiohttp.ClientSession, server: UpstashServer, raw_db0: aioredis.Redis
) -> None:
    server.faults.drop_after_execute_next()
    with pytest.raises(aiohttp.ClientError):
        await call(http, server, [["INCR", "d"], ["SET", "e", "1"]], path="/pipeline")
    assert await raw_db0.get("d") == b"1"  # executed although the client saw no reply
    assert await raw_db0.get("e") == b"1"
    assert (await call(http, server, ["INCR", "d"]))[1] == {"result": 2}


async def test_sdk_retries_blindly_after_a_dropped_reply(
    server: UpstashServer, raw_db0: aioredis.Redis
) -> None:
    # The SDK retries any failure (here: a reply lost after execution), so a
    # non-idempotent command runs twice; adapters must only send retry-safe commands.
    async with UpstashRedis(server.url, TOKEN, rest_retries=1, rest_retry_interval=0.01) as sdk:
        server.faults.drop_after_execute_next()
        assert await sdk.incr("twice") == 2
        server.faults.fail_next(502)
        assert await sdk.get("twice") == "2"  # HTML 502 -> JSON error -> retried
    assert await raw_db0.get("twice") == b"2"
    assert server.stats.requests == 4


async def test_redis_outage_and_recovery(
    http: aiohttp.ClientSession, needs_redis_server: None
) -> None:
    with RedisServerProcess() as private:
        async with UpstashServer(private.url, TOKEN) as server:
            assert (await call(http, server, ["SET", "o", "1"]))[0] == 200
            private.stop(keep_dir=True)
            status, body, _ = await call(http, server, ["GET", "o"])
            assert status == 500 and body["error"].startswith("ERR")
            private.start()
            assert (await call(http, server, ["GET", "o"]))[:2] == (200, {"result": None})
