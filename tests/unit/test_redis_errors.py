"""What each Redis error means for the writer (redis-py's own reply parser picks the class)."""

from __future__ import annotations

import pytest
from redis._parsers.base import BaseParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from polygon_adapters.redis_errors import ErrorKind, classify, describe, worst


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        ("READONLY You can't write against a read only replica.", ErrorKind.NODE_LOST),
        ("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
         ErrorKind.NODE_LOST),
        ("LOADING Redis is loading the dataset in memory", ErrorKind.NODE_LOST),
        ("CLUSTERDOWN The cluster is down", ErrorKind.NODE_LOST),
        ("TRYAGAIN Multiple keys request during rehashing of slot", ErrorKind.NODE_LOST),
        ("WRONGPASS invalid username-password pair or user is disabled.", ErrorKind.FATAL),
        ("NOAUTH Authentication required.", ErrorKind.FATAL),
        ("NOPERM this user has no permissions to run the 'set' command", ErrorKind.FATAL),
        ("OOM command not allowed when used memory > 'maxmemory'.", ErrorKind.RETRY),
        ("ERR unknown command", ErrorKind.RETRY),
    ],
)  # fmt: skip
def test_each_reply_has_its_kind_and_keeps_its_code(reply: str, kind: ErrorKind) -> None:
    exc = BaseParser.parse_error(reply)
    assert classify(exc) is kind
    assert describe(exc) == reply


def test_connection_errors_mean_the_node_is_lost() -> None:
    for exc in (RedisConnectionError("reset"), RedisTimeoutError("t"), ConnectionResetError()):
        assert classify(exc) is ErrorKind.NODE_LOST
    assert classify(ValueError("x")) is ErrorKind.RETRY


def test_the_gravest_kind_wins() -> None:
    oom = BaseParser.parse_error("OOM x")
    readonly = BaseParser.parse_error("READONLY x")
    noperm = BaseParser.parse_error("NOPERM x")
    assert worst([oom]) is ErrorKind.RETRY
    assert worst([oom, readonly]) is ErrorKind.NODE_LOST
    assert worst([readonly, noperm, oom]) is ErrorKind.FATAL
    assert worst([]) is ErrorKind.RETRY
