"""A sans-I/O session of the Polygon/Massive stocks feed (the style of websockets' and h11's).

The adapter pumps: each inbound frame goes to :meth:`FeedSession.receive`, which decodes it
and returns the :class:`~polygon_core.codec.DecodedFrame`; then it sends
:meth:`~FeedSession.data_to_send`, logs :meth:`~FeedSession.drain_notices`, and closes the
socket once :attr:`~FeedSession.state` is ``CLOSED``. The session never does I/O.

Handshake (``polygon-protocol.md`` §2, SPEC §4)::

    AWAITING_CONNECTED --connected--> AUTHENTICATING --auth_success--> SUBSCRIBING
    SUBSCRIBING --every topic acked, or first data--> STREAMING
    any state --auth_failed / max_connections / auth_timeout / ... --> CLOSED

Status handling (§3; match on ``status``, never on ``message`` text, except to read the
topic after ``subscribed to: ``):

* ``connected`` → send auth. The spec's ConnectEvent example is ``success`` +
  ``Connected Successfully``, so any ``success`` while awaiting ``connected`` counts too.
* ``auth_success`` → send every subscribe frame (subscribe only after this reply, §2). The
  2019 server answered ``success`` + ``authenticated``: any ``success`` while authenticating
  counts too.
* ``auth_failed`` (bad key, or a plan without this host), and the 2019 ``error`` +
  ``authentication failed`` (any ``error`` while authenticating) → CLOSED(auth_failed).
* ``max_connections`` → CLOSED(max_connections) in any state: eviction may come after
  ``auth_success`` or while streaming, to the older or the newer connection (§4).
* ``auth_timeout``, ``force_disconnect``, ``slow_consumer`` → CLOSED with that reason.
* ``auth_required`` (subscribe before auth) → CLOSED(protocol_error): reconnecting re-auths.
* ``success`` + ``subscribed to: <TOPIC>`` → record the ack. Acks are per topic and may
  share a frame or come one per frame (§2); a comma list in one ack is accepted too.
* ``error`` after auth (``not authorized``: the plan lacks a channel, §1.2) → a loud
  notice; the connection is kept and nothing is re-sent, so it cannot loop.
* anything else → a warning notice.

All statuses of a frame are handled in order, and data sharing a frame with statuses is
returned like any other (§7, §14 item 1); data before STREAMING is never dropped.

Fast path: a frame without statuses on a session past its handshake costs one decode and
one attribute test. The API key appears only in the auth frame's bytes: never in a
``log_text``, notice, ``repr`` or ``str``; server texts are redacted before use.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum

import msgspec

from polygon_core.backoff import DisconnectReason
from polygon_core.codec import DecodedFrame, FrameDecoder
from polygon_core.events import Channel, StatusMessage
from polygon_core.subscriptions import (
    SymbolSelection,
    auth_message,
    subscribe_message,
    subscribe_params,
)

__all__ = ["FeedSession", "Notice", "NoticeCode", "OutboundMessage", "SessionState"]

REDACTED = "***"
_AUTH_LOG_TEXT = '{"action":"auth","params":"***"}'
_ACK_PREFIX = "subscribed to:"
_MAX_TEXT = 200


class SessionState(Enum):
    AWAITING_CONNECTED = "awaiting_connected"
    AUTHENTICATING = "authenticating"
    SUBSCRIBING = "subscribing"
    """Auth succeeded and the subscribe frames are queued; acks pending."""
    STREAMING = "streaming"
    """Every topic acknowledged, or market data arrived."""
    CLOSED = "closed"
    """The adapter must close the socket; see :attr:`FeedSession.close_reason`."""


class NoticeCode(StrEnum):
    CONNECTED = "connected"
    AUTHENTICATED = "authenticated"
    SUBSCRIBED = "subscribed"
    STREAMING = "streaming"
    SUBSCRIBE_ERROR = "subscribe_error"
    AUTH_FAILED = "auth_failed"
    MAX_CONNECTIONS = "max_connections"
    AUTH_TIMEOUT = "auth_timeout"
    SLOW_CONSUMER = "slow_consumer"
    FORCE_DISCONNECT = "force_disconnect"
    PROTOCOL_ERROR = "protocol_error"
    UNEXPECTED_STATUS = "unexpected_status"
    UNKNOWN_STATUS = "unknown_status"
    STATUS = "status"
    """An informational status (``unsubscribed to: ...``, an ack for a topic not sent)."""


class Notice(msgspec.Struct, frozen=True):
    """A lifecycle message for the adapter to log: ``logger.log(n.level, "%s", n.text)``."""

    level: int
    """A :mod:`logging` level (``logging.INFO``, ``WARNING``, ``ERROR``, ``DEBUG``)."""
    code: NoticeCode
    text: str


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """A text frame to send. ``log_text`` is safe to log; ``data`` stays out of ``repr``."""

    data: bytes = field(repr=False)
    log_text: str


# Statuses that end the connection: (reason, log level, notice code, notice text).
_E, _W, _R = logging.ERROR, logging.WARNING, DisconnectReason
_CLOSING: dict[str, tuple[DisconnectReason, int, NoticeCode, str]] = {
    "auth_failed": (_R.AUTH_FAILED, _E, NoticeCode.AUTH_FAILED, "auth_failed: {msg} — check "
        "POLYGON_API_KEY and that the plan includes {ch} on this host; waiting a long cooldown"),
    "max_connections": (_R.MAX_CONNECTIONS, _E, NoticeCode.MAX_CONNECTIONS, "max_connections: "
        "another client uses this account's slot for this cluster ({msg}); stop the other "
        "client or replica, or ask Massive support for more; waiting at least 60 s"),
    "auth_timeout": (_R.AUTH_TIMEOUT, _W, NoticeCode.AUTH_TIMEOUT, "auth_timeout: no auth "
        "reached the server in time ({msg}); reconnecting with backoff"),
    "slow_consumer": (_R.SLOW_CONSUMER, _W, NoticeCode.SLOW_CONSUMER, "slow_consumer: the "
        "server's buffer overflowed ({msg}); the reader is not keeping up; reconnecting"),
    "force_disconnect": (_R.FORCE_DISCONNECT, _W, NoticeCode.FORCE_DISCONNECT, "force_disconnect: "
        "the server ended the connection ({msg}); reconnecting with backoff"),
    "auth_required": (_R.PROTOCOL_ERROR, _E, NoticeCode.PROTOCOL_ERROR, "auth_required: the "
        "server saw a request before auth ({msg}); reconnecting"),
}  # fmt: skip


class FeedSession:
    """The protocol state of one connection; build a new one per connection."""

    def __init__(
        self,
        api_key: str,
        channels: Sequence[Channel],
        symbols: SymbolSelection | Iterable[str],
        batch_size: int,
        decoder: FrameDecoder | None = None,
        keep_raw: bool = False,
    ) -> None:
        if not api_key:
            raise ValueError("the API key is empty")
        self._params = subscribe_params(channels, symbols, batch_size)
        if not self._params:
            raise ValueError("nothing to subscribe: no symbols and no wildcard")
        self._decode = (decoder if decoder is not None else FrameDecoder()).decode
        self._keep_raw = keep_raw
        self._auth = auth_message(api_key)
        self._key = api_key
        self._channels = ",".join(Channel(c).value for c in channels)
        self._topic_count = sum(p.count(",") + 1 for p in self._params)
        self._pending: set[str] = set()
        self._acked: set[str] = set()
        self._outbox: list[OutboundMessage] = []
        self._notices: list[Notice] = []
        self._state = SessionState.AWAITING_CONNECTED
        self._handshaking = True
        self._close_reason: DisconnectReason | None = None
        self._errors: list[str] = []

    # -- the pump ------------------------------------------------------------------------

    def receive(self, data: bytes | bytearray | memoryview | str) -> DecodedFrame:
        """Decode one inbound frame, act on its statuses, and return it. Never raises."""
        frame = self._decode(data, keep_raw=self._keep_raw)
        if frame.statuses or self._handshaking:
            self._after(frame)
        return frame

    def data_to_send(self) -> list[OutboundMessage]:
        """The frames to send now, in order (drains the queue)."""
        out, self._outbox = self._outbox, []
        return out

    def drain_notices(self) -> list[Notice]:
        """Lifecycle notices since the last call, in order (drains the queue)."""
        out, self._notices = self._notices, []
        return out

    def close(self, reason: DisconnectReason) -> None:
        """Mark the session closed (socket dropped, shutdown); a status reason already set wins."""
        if self._state is not SessionState.CLOSED:
            self._set_closed(reason)

    def redact(self, text: str) -> str:
        """``text`` with the API key replaced by ``***`` (for logging inbound frames)."""
        return text.replace(self._key, REDACTED) if self._key in text else text

    # -- state ---------------------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def close_reason(self) -> DisconnectReason | None:
        return self._close_reason

    @property
    def topic_count(self) -> int:
        """Topics this session subscribes to (``AM.*,FMV.*`` counts 2)."""
        return self._topic_count

    @property
    def acked_topics(self) -> frozenset[str]:
        return frozenset(self._acked)

    @property
    def acked_count(self) -> int:
        return len(self._acked)

    @property
    def pending_count(self) -> int:
        """Topics sent and not yet acknowledged (0 before auth)."""
        return len(self._pending)

    @property
    def errors(self) -> tuple[str, ...]:
        """Redacted messages of the ``error`` statuses received after auth."""
        return tuple(self._errors)

    def __repr__(self) -> str:
        reason = f", close_reason={self._close_reason.value}" if self._close_reason else ""
        return (
            f"<FeedSession {self._state.value} channels={self._channels} "
            f"topics={self._topic_count} acked={len(self._acked)}{reason}>"
        )

    __str__ = __repr__

    # -- the slow path -------------------------------------------------------------------

    def _after(self, frame: DecodedFrame) -> None:
        for status in frame.statuses:
            if self._state is SessionState.CLOSED:
                return
            self._on_status(status)
        if frame.events and self._state is SessionState.SUBSCRIBING:
            self._set_state(SessionState.STREAMING)
            self._notice(
                logging.INFO,
                NoticeCode.STREAMING,
                f"streaming: data arriving ({len(self._acked)} of {self._topic_count} "
                "topics acknowledged so far)",
            )

    def _on_status(self, message: StatusMessage) -> None:
        status = message.status.strip().lower()
        text = message.message
        state = self._state
        if status == "success":
            if text[: len(_ACK_PREFIX)].lower() == _ACK_PREFIX:
                self._on_acks(text[len(_ACK_PREFIX) :])
            elif state is SessionState.AWAITING_CONNECTED:
                self._on_connected()
            elif state is SessionState.AUTHENTICATING:
                self._on_authenticated()
            else:
                self._notice(logging.DEBUG, NoticeCode.STATUS, f"success: {self._show(text)}")
        elif status == "connected":
            if state is SessionState.AWAITING_CONNECTED:
                self._on_connected()
            else:
                self._unexpected(status, text)
        elif status == "auth_success":
            if state is SessionState.AUTHENTICATING:
                self._on_authenticated()
            else:
                self._unexpected(status, text)
        elif status == "error":
            if state is SessionState.AUTHENTICATING:
                self._close_for("auth_failed", text)
            else:
                self._errors.append(self._show(text))
                self._notice(
                    logging.ERROR,
                    NoticeCode.SUBSCRIBE_ERROR,
                    f"subscribe error: {self._show(text)} — the plan may not include one of "
                    f"{self._channels} on this host; not retried (connection kept)",
                )
        elif status in _CLOSING:
            self._close_for(status, text)
        else:
            self._notice(
                logging.WARNING,
                NoticeCode.UNKNOWN_STATUS,
                f"unknown status {self._show(message.status)}: {self._show(text)}",
            )

    def _on_connected(self) -> None:
        self._set_state(SessionState.AUTHENTICATING)
        self._outbox.append(OutboundMessage(self._auth, _AUTH_LOG_TEXT))
        self._notice(logging.INFO, NoticeCode.CONNECTED, "connected; sending auth")

    def _on_authenticated(self) -> None:
        self._set_state(SessionState.SUBSCRIBING)
        for params in self._params:
            data = subscribe_message(params)
            self._outbox.append(OutboundMessage(data, data.decode()))
            self._pending.update(params.split(","))
        self._notice(
            logging.INFO,
            NoticeCode.AUTHENTICATED,
            f"authenticated; subscribing {self._topic_count} topics of {self._channels} "
            f"in {len(self._params)} message(s)",
        )

    def _on_acks(self, topics: str) -> None:
        pending = self._pending
        had_pending = bool(pending)
        for item in topics.split(","):
            topic = item.strip()
            if topic in pending:
                pending.discard(topic)
                self._acked.add(topic)
            elif topic not in self._acked:
                self._notice(
                    logging.DEBUG,
                    NoticeCode.STATUS,
                    f"ack for a topic not requested: {self._show(topic)}",
                )
        if had_pending and not pending:
            self._notice(
                logging.INFO, NoticeCode.SUBSCRIBED, f"subscribed {len(self._acked)} topics"
            )
            if self._state is SessionState.SUBSCRIBING:
                self._set_state(SessionState.STREAMING)

    def _unexpected(self, status: str, text: str) -> None:
        self._notice(
            logging.WARNING,
            NoticeCode.UNEXPECTED_STATUS,
            f"unexpected status {status} while {self._state.value}: {self._show(text)}",
        )

    def _close_for(self, status: str, text: str) -> None:
        reason, level, code, template = _CLOSING[status]
        self._notice(level, code, template.format(msg=self._show(text), ch=self._channels))
        self._set_closed(reason)

    def _set_closed(self, reason: DisconnectReason) -> None:
        self._close_reason = reason
        self._set_state(SessionState.CLOSED)

    def _set_state(self, state: SessionState) -> None:
        self._state = state
        self._handshaking = state in _HANDSHAKING

    def _notice(self, level: int, code: NoticeCode, text: str) -> None:
        self._notices.append(Notice(level, code, text))

    def _show(self, text: str) -> str:
        """A server text made safe to log: key redacted, shortened, quoted and escaped."""
        return repr(self.redact(text)[:_MAX_TEXT])


_HANDSHAKING = frozenset(
    {SessionState.AWAITING_CONNECTED, SessionState.AUTHENTICATING, SessionState.SUBSCRIBING}
)
