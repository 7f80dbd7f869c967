"""What a Redis error means for the writer: retry here, leave this node, or stop.

Three kinds, decided from redis-py's exception classes (which it picks from the reply's
error code: ``READONLY`` -> ``ReadOnlyError`` and so on):

* **fatal** (``WRONGPASS``, ``NOAUTH``, ``NOPERM``, other authentication and ACL refusals):
  no retry can fix them; the writer raises :class:`~polygon_core.errors.StoreRejected`.
* **node lost** -- the node we are connected to is not the writable primary any more, or
  the connection to it is gone: ``READONLY`` (a replica: the primary failed over and this
  node was demoted), ``MASTERDOWN`` (a replica cut off from its primary),
  ``LOADING`` (a node loading its dataset: restarted or being replaced), ``CLUSTERDOWN``
  and ``TRYAGAIN`` (a cluster reconfiguring), and every connection error, reset and
  timeout. The writer drops its pooled connections, so the next attempt resolves the
  configured host name again (a managed primary endpoint moves on failover) or, on a
  cluster, reloads the slot map; then it raises
  :class:`~polygon_core.errors.StoreUnavailable` and the flush loop retries with backoff.
* **other replies** (``OOM`` ...): retryable on the same connection.
"""

from __future__ import annotations

from enum import Enum

from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    NoPermissionError,
    ReadOnlyError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["ErrorKind", "FATAL_ERRORS", "classify", "describe", "worst"]

FATAL_ERRORS: tuple[type[BaseException], ...] = (
    AuthenticationError,
    AuthorizationError,
    NoPermissionError,
)
"""Credential and permission refusals (``WRONGPASS``, ``NOAUTH``, ``NOPERM``)."""

_NODE_REPLIES: tuple[type[BaseException], ...] = (
    ReadOnlyError,
    ClusterDownError,  # also MASTERDOWN: redis-py's MasterDownError is a ClusterDownError
    BusyLoadingError,
    TryAgainError,
)
_CONNECTION: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    TimeoutError,
)


class ErrorKind(Enum):
    FATAL = "fatal"
    NODE_LOST = "node_lost"
    RETRY = "retry"


_RANK = {ErrorKind.RETRY: 0, ErrorKind.NODE_LOST: 1, ErrorKind.FATAL: 2}


def classify(exc: BaseException) -> ErrorKind:
    """The kind of one error (a raised exception or an error reply)."""
    if isinstance(exc, FATAL_ERRORS):
        return ErrorKind.FATAL
    if isinstance(exc, _NODE_REPLIES + _CONNECTION):
        return ErrorKind.NODE_LOST
    return ErrorKind.RETRY


def worst(errors: list[BaseException]) -> ErrorKind:
    """The gravest kind among ``errors`` (fatal > node lost > retry)."""
    return max((classify(e) for e in errors), key=_RANK.__getitem__, default=ErrorKind.RETRY)


_CODES: dict[type[BaseException], str] = {
    ReadOnlyError: "READONLY",
    MasterDownError: "MASTERDOWN",
    ClusterDownError: "CLUSTERDOWN",
    BusyLoadingError: "LOADING",
    TryAgainError: "TRYAGAIN",
    NoPermissionError: "NOPERM",
}


def describe(exc: BaseException) -> str:
    """``READONLY You can't write against a read only replica.`` and the like: the reply's
    own error code when redis-py kept it, else the exception's class name."""
    code = getattr(exc, "status_code", None) or _CODES.get(type(exc)) or type(exc).__name__
    text = str(exc)
    return f"{code} {text}" if text else str(code)
