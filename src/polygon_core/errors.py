"""The exception tree of polygon-sink.

::

    PolygonIngestError
    ├── FrameDecodeError          bad upstream frame; carries an excerpt
    ├── FeedError
    │   ├── AuthenticationFailed  fatal: bad key or plan without the feed
    │   ├── ConnectionLimitExceeded  max_connections: another client holds the slot
    │   └── FeedDisconnected      retryable
    ├── StoreUnavailable          retryable
    ├── StoreRejected             fatal: the store refused (wrong token, bad config)
    └── ArchiveError
        └── ArchiveMisconfigured  fatal at start: no such bucket, access denied, bad credentials

Adapters translate library exceptions into this tree (``raise StoreUnavailable(...) from
exc``); :func:`is_retryable` decides retry versus fatal without knowing any library.
The core itself raises almost nothing: decoding reports rejects instead of raising.
"""

from __future__ import annotations

__all__ = [
    "ArchiveError",
    "ArchiveMisconfigured",
    "AuthenticationFailed",
    "ConnectionLimitExceeded",
    "FeedDisconnected",
    "FeedError",
    "FrameDecodeError",
    "LeaseLost",
    "PolygonIngestError",
    "StoreRejected",
    "StoreUnavailable",
    "is_retryable",
]


class PolygonIngestError(Exception):
    """Base class of every error polygon-sink raises on purpose."""


class FrameDecodeError(PolygonIngestError):
    """An upstream frame could not be decoded; ``excerpt`` holds its first bytes."""

    def __init__(self, message: str, excerpt: bytes = b"") -> None:
        super().__init__(message)
        self.excerpt = excerpt[:200]


class FeedError(PolygonIngestError):
    """Something went wrong on a market-data connection."""


class AuthenticationFailed(FeedError):
    """The feed refused the API key (``auth_failed``). Retrying soon will not help."""


class ConnectionLimitExceeded(FeedError):
    """The feed closed us with ``max_connections``: another client uses the slot."""


class FeedDisconnected(FeedError):
    """The connection dropped; reconnecting with backoff is the cure."""


class StoreUnavailable(PolygonIngestError):
    """The latest-value store could not be reached or timed out; retry later."""


class LeaseLost(StoreUnavailable):
    """A fenced write was refused: this task no longer holds the leader lease (or its
    fencing deadline has passed). Nothing of the batch was written."""


class StoreRejected(PolygonIngestError):
    """The store refused the request for a reason retrying cannot fix (e.g. bad token)."""


class ArchiveError(PolygonIngestError):
    """The raw archive failed (S3 errors after retries, bad configuration)."""


class ArchiveMisconfigured(ArchiveError):
    """S3 answered that the archive's configuration is wrong (the bucket does not exist,
    access is denied, the credentials are rejected): retrying cannot fix it."""


_RETRYABLE: tuple[type[BaseException], ...] = (FeedDisconnected, StoreUnavailable, ArchiveError)


def is_retryable(exc: BaseException) -> bool:
    """True when ``exc`` is transient and the operation should be retried with backoff.

    ``AuthenticationFailed``, ``ConnectionLimitExceeded``, ``StoreRejected`` and
    ``ArchiveMisconfigured`` are not retryable in the ordinary sense: they need a long
    cooldown or an operator.
    """
    return isinstance(exc, _RETRYABLE) and not isinstance(exc, ArchiveMisconfigured)
