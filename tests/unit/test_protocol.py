"""The sans-I/O feed session, driven with frames as they appear on the wire.

The captures are verbatim from polygon-protocol.md §2-§4 (the handshake, status messages,
max_connections texts, the 2019 formats, the spec's ``success``/``Connected Successfully``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polygon_core.backoff import DisconnectReason
from polygon_core.codec import FrameDecoder
from polygon_core.events import Channel, MinuteAggregate, Trade
from polygon_core.protocol import FeedSession, NoticeCode, OutboundMessage, SessionState
from polygon_core.subscriptions import DELAYED_CHANNELS, REALTIME_CHANNELS, parse_symbols
from tests.strategies import dumps, frames

KEY = "sEcReT_kEy_123"
S = SessionState

CONNECTED = b'[{"ev":"status","status":"connected","message":"Connected Successfully"}]'
AUTH_SUCCESS = b'[{"ev":"status","status":"auth_success","message":"authenticated"}]'
AUTH_FAILED = b'[{"ev":"status","status":"auth_failed","message":"authentication failed"}]'
PLAN_FAILED = (
    b'[{"ev":"status","status":"auth_failed","message":"Your plan doesn\'t include websocket'
    b' access. Visit https://polygon.io/pricing to upgrade."}]'
)
SPEC_CONNECTED = b'[{"ev":"status","status":"success","message":"Connected Successfully"}]'
OLD_AUTH_SUCCESS = b'[{"ev":"status","status":"success","message":"authenticated"}]'
OLD_AUTH_FAILED = b'[{"ev":"status","status":"error","message":"authentication failed"}]'
NOT_AUTHORIZED = b'[{"ev":"status","status":"error","message":"not authorized"}]'
MAX_CONNECTIONS_TEXTS = [
    "Maximum number of connections exceeded.",
    "Maximum number of websocket connections exceeded. ",
    "Maximum number of websocket connections exceeded. You have reached the connection limit"
    " for your account. Please contact support at https://polygon.io/contact to increase your"
    " limit.",
]
AM_AAPL = {
    "ev": "AM", "sym": "AAPL", "v": 4110, "av": 9470157, "op": 130.46, "vw": 130.4209,
    "o": 130.42, "c": 130.43, "h": 130.45, "l": 130.4, "a": 130.6, "z": 685,
    "s": 1610144640000, "e": 1610144700000,
}  # fmt: skip
T_BRKB = {"ev": "T", "sym": "BRK.B", "i": "52983525029461", "x": 4, "p": 412.5, "s": 100,
          "t": 1610144700123, "c": [14, 41], "z": 1}  # fmt: skip


def status(s: str, message: str) -> dict[str, str]:
    return {"ev": "status", "status": s, "message": message}


def ack(topic: str) -> dict[str, str]:
    return status("success", f"subscribed to: {topic}")


def frame(*elements: Any) -> bytes:
    return dumps(list(elements))


def session(symbols: str = "AAPL,BRK.B,AMpB", batch: int = 2, **kw: Any) -> FeedSession:
    return FeedSession(KEY, REALTIME_CHANNELS, parse_symbols(symbols), batch, **kw)


def sent_json(s: FeedSession) -> list[Any]:
    return [json.loads(m.data) for m in s.data_to_send()]


def codes(s: FeedSession) -> list[NoticeCode]:
    return [n.code for n in s.drain_notices()]


def subscribed(symbols: str = "AAPL,BRK.B,AMpB", batch: int = 2) -> FeedSession:
    s = session(symbols, batch)
    s.receive(CONNECTED)
    s.receive(AUTH_SUCCESS)
    s.data_to_send()
    s.drain_notices()
    assert state(s) is S.SUBSCRIBING
    return s


def state(s: FeedSession) -> SessionState:
    """``s.state``, read through a call so mypy does not narrow it across ``receive``."""
    return s.state


def assert_key_hidden(s: FeedSession, sent: Sequence[OutboundMessage] = ()) -> None:
    for text in (repr(s), str(s), *(m.log_text for m in sent), *(repr(m) for m in sent)):
        assert KEY not in text
    for n in s.drain_notices():
        assert KEY not in n.text and KEY not in repr(n)


# -- the handshake -----------------------------------------------------------------------------


def test_full_handshake_with_acks_in_one_frame() -> None:
    s = session()
    assert state(s) is S.AWAITING_CONNECTED and s.data_to_send() == []

    s.receive(CONNECTED)
    assert state(s) is S.AUTHENTICATING
    [auth] = s.data_to_send()
    assert auth.data == b'{"action":"auth","params":"sEcReT_kEy_123"}'
    assert auth.log_text == '{"action":"auth","params":"***"}'
    assert KEY not in repr(auth)

    s.receive(AUTH_SUCCESS)
    assert state(s) is S.SUBSCRIBING
    subs = s.data_to_send()
    assert [json.loads(m.data) for m in subs] == [
        {"action": "subscribe", "params": "AM.AAPL,FMV.AAPL,AM.BRK.B,FMV.BRK.B"},
        {"action": "subscribe", "params": "AM.AMpB,FMV.AMpB"},
    ]
    assert [m.log_text for m in subs] == [m.data.decode() for m in subs]
    assert s.pending_count == 6 and s.topic_count == 6

    topics = ["AM.AAPL", "FMV.AAPL", "AM.BRK.B", "FMV.BRK.B", "AM.AMpB", "FMV.AMpB"]
    out = s.receive(frame(*(ack(t) for t in topics)))
    assert len(out.statuses) == 6 and out.events == []
    assert state(s) is S.STREAMING
    assert s.acked_topics == frozenset(topics) and s.pending_count == 0
    assert s.data_to_send() == []
    notices = s.drain_notices()
    assert [n.code for n in notices] == [
        NoticeCode.CONNECTED, NoticeCode.AUTHENTICATED, NoticeCode.SUBSCRIBED,
    ]  # fmt: skip
    assert all(n.level == logging.INFO for n in notices)
    assert notices[-1].text == "subscribed 6 topics"


def test_acks_in_separate_frames() -> None:
    s = subscribed("AAPL", batch=1)
    s.receive(frame(ack("AM.AAPL")))
    assert state(s) is S.SUBSCRIBING and s.acked_count == 1 and s.pending_count == 1
    s.receive(frame(ack("FMV.AAPL")))
    assert state(s) is S.STREAMING
    assert codes(s) == [NoticeCode.SUBSCRIBED]


def test_wildcard_handshake() -> None:
    s = FeedSession(KEY, DELAYED_CHANNELS, parse_symbols("*"), 500)
    s.receive(CONNECTED)
    s.receive(AUTH_SUCCESS)
    assert sent_json(s)[1:] == [{"action": "subscribe", "params": "T.*,Q.*"}]
    s.receive(b'[{"ev":"status","status":"success","message":"subscribed to: T.*"}]')
    s.receive(b'[{"ev":"status","status":"success","message":"subscribed to: Q.*"}]')
    assert state(s) is S.STREAMING


def test_one_ack_for_several_topics_is_accepted() -> None:
    s = subscribed("AAPL", batch=1)
    s.receive(frame(status("success", "subscribed to: AM.AAPL, FMV.AAPL")))
    assert state(s) is S.STREAMING


def test_ack_for_a_topic_not_sent_is_only_noted() -> None:
    s = subscribed("AAPL", batch=1)
    s.receive(frame(ack("T.NOTOURS"), status("success", "unsubscribed to: AM.X")))
    assert state(s) is S.SUBSCRIBING and s.acked_count == 0
    assert {n.level for n in s.drain_notices()} == {logging.DEBUG}


# -- data and statuses in one frame --------------------------------------------------------------


def test_statuses_sharing_a_frame_with_data() -> None:
    s = subscribed("AAPL", batch=1)
    out = s.receive(frame(ack("AM.AAPL"), AM_AAPL, ack("FMV.AAPL"), AM_AAPL))
    assert [type(e) for e in out.events] == [MinuteAggregate, MinuteAggregate]
    assert state(s) is S.STREAMING and s.pending_count == 0


def test_data_before_acks_is_returned_and_starts_streaming() -> None:
    s = subscribed("AAPL", batch=1)
    out = s.receive(frame(AM_AAPL))
    assert len(out.events) == 1
    assert state(s) is S.STREAMING
    assert codes(s) == [NoticeCode.STREAMING]
    s.receive(frame(ack("AM.AAPL"), ack("FMV.AAPL")))
    assert state(s) is S.STREAMING and codes(s) == [NoticeCode.SUBSCRIBED]


@pytest.mark.parametrize("before", [[], [CONNECTED]])
def test_data_before_auth_is_never_dropped(before: list[bytes]) -> None:
    s = session()
    for data in before:
        s.receive(data)
    out = s.receive(frame(T_BRKB))
    assert [e.symbol for e in out.events if isinstance(e, Trade)] == ["BRK.B"]
    assert state(s) in (S.AWAITING_CONNECTED, S.AUTHENTICATING)


def test_fast_path_touches_nothing() -> None:
    s = subscribed("AAPL", batch=1)
    s.receive(frame(ack("AM.AAPL"), ack("FMV.AAPL")))
    s.drain_notices()
    for _ in range(3):
        out = s.receive(frame(AM_AAPL, AM_AAPL, {"ev": "A", "sym": "AAPL"}))
        assert len(out.events) == 2 and len(out.rejects) == 1
    assert s.data_to_send() == [] and s.drain_notices() == [] and state(s) is S.STREAMING


def test_keep_raw_and_custom_decoder() -> None:
    s = session(decoder=FrameDecoder(), keep_raw=True)
    out = s.receive(frame(AM_AAPL, {"ev": "T", "sym": "X"}))
    assert [(c, sym) for c, sym, _ in out.archive] == [(Channel.AM, "AAPL"), (Channel.T, "X")]


def test_str_frames_are_accepted() -> None:
    s = session()
    s.receive(CONNECTED.decode())
    assert state(s) is S.AUTHENTICATING


# -- failures ------------------------------------------------------------------------------------


@pytest.mark.parametrize("reply", [AUTH_FAILED, PLAN_FAILED, OLD_AUTH_FAILED])
def test_auth_failed(reply: bytes) -> None:
    s = session()
    s.receive(CONNECTED)
    s.data_to_send()
    s.drain_notices()
    s.receive(reply)
    assert state(s) is S.CLOSED and s.close_reason is DisconnectReason.AUTH_FAILED
    assert s.data_to_send() == []
    [notice] = s.drain_notices()
    assert notice.code is NoticeCode.AUTH_FAILED and notice.level == logging.ERROR
    assert "POLYGON_API_KEY" in notice.text
    assert json.loads(reply)[0]["message"][:20] in notice.text


@pytest.mark.parametrize("text", MAX_CONNECTIONS_TEXTS)
@pytest.mark.parametrize("acks", [0, 1, 2])
@pytest.mark.parametrize("stage", [S.AWAITING_CONNECTED, S.AUTHENTICATING, S.SUBSCRIBING])
def test_max_connections_in_any_state(text: str, acks: int, stage: SessionState) -> None:
    s = session("AAPL", batch=1)
    for data in {S.AWAITING_CONNECTED: [], S.AUTHENTICATING: [CONNECTED]}.get(
        stage, [CONNECTED, AUTH_SUCCESS, frame(*(ack(t) for t in ["AM.AAPL", "FMV.AAPL"][:acks]))]
    ):
        s.receive(data)
    s.data_to_send()
    s.drain_notices()
    s.receive(frame(status("max_connections", text)))
    assert state(s) is S.CLOSED and s.close_reason is DisconnectReason.MAX_CONNECTIONS
    [notice] = s.drain_notices()
    assert notice.code is NoticeCode.MAX_CONNECTIONS and notice.level == logging.ERROR
    assert "another client" in notice.text and "60 s" in notice.text
    assert s.data_to_send() == []


def test_max_connections_while_streaming_in_a_data_frame() -> None:
    s = subscribed("AAPL", batch=1)
    s.receive(frame(AM_AAPL))
    out = s.receive(frame(AM_AAPL, status("max_connections", MAX_CONNECTIONS_TEXTS[1]), AM_AAPL))
    assert len(out.events) == 2
    assert s.close_reason is DisconnectReason.MAX_CONNECTIONS


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        ("auth_timeout", DisconnectReason.AUTH_TIMEOUT),
        ("force_disconnect", DisconnectReason.FORCE_DISCONNECT),
        ("slow_consumer", DisconnectReason.SLOW_CONSUMER),
        ("auth_required", DisconnectReason.PROTOCOL_ERROR),
    ],
)
def test_closing_statuses(wire: str, reason: DisconnectReason) -> None:
    s = subscribed()
    s.receive(frame(status(wire, "No authentication request received.")))
    assert state(s) is S.CLOSED and s.close_reason is reason
    assert [n.level for n in s.drain_notices()][0] >= logging.WARNING


def test_not_authorized_keeps_the_connection_and_is_not_retried() -> None:
    s = subscribed("AAPL", batch=1)
    s.receive(NOT_AUTHORIZED)
    s.receive(frame(ack("AM.AAPL")))
    assert state(s) is S.SUBSCRIBING and s.close_reason is None
    assert s.data_to_send() == []  # nothing re-sent
    [notice] = s.drain_notices()
    assert notice.code is NoticeCode.SUBSCRIBE_ERROR and notice.level == logging.ERROR
    assert "not authorized" in notice.text
    assert s.errors == ("'not authorized'",)
    s.receive(frame(AM_AAPL))
    assert state(s) is S.STREAMING


def test_unknown_and_unexpected_statuses_warn() -> None:
    s = session()
    s.receive(frame(status("auth_success", "authenticated")))  # before connected
    s.receive(CONNECTED)
    s.receive(CONNECTED)  # twice: auth is sent once
    s.receive(frame(status("brand_new", "hello"), {"ev": "status", "status": "connected"}))
    assert len(s.data_to_send()) == 1
    assert codes(s) == [
        NoticeCode.UNEXPECTED_STATUS, NoticeCode.CONNECTED, NoticeCode.UNEXPECTED_STATUS,
        NoticeCode.UNKNOWN_STATUS, NoticeCode.UNEXPECTED_STATUS,
    ]  # fmt: skip


# -- historical formats --------------------------------------------------------------------------


def test_spec_connect_event_success_connected_successfully() -> None:
    s = session()
    s.receive(SPEC_CONNECTED)
    assert state(s) is S.AUTHENTICATING and len(s.data_to_send()) == 1


def test_2019_auth_success_and_acks_in_one_frame() -> None:
    s = session("AAPL", batch=1)
    s.receive(CONNECTED)
    s.receive(OLD_AUTH_SUCCESS)
    assert state(s) is S.SUBSCRIBING
    assert [m["action"] for m in sent_json(s)] == ["auth", "subscribe"]
    s.receive(frame(ack("AM.AAPL"), ack("FMV.AAPL"), AM_AAPL))
    assert state(s) is S.STREAMING


def test_connected_and_auth_success_in_one_frame() -> None:
    s = session("AAPL", batch=1)
    s.receive(frame(status("connected", "Connected Successfully"), status("auth_success", "ok")))
    assert [m["action"] for m in sent_json(s)] == ["auth", "subscribe"]


# -- closed sessions, robustness, secrecy ------------------------------------------------------


def test_closed_session_returns_frames_and_sends_nothing() -> None:
    s = session()
    s.receive(frame(status("max_connections", MAX_CONNECTIONS_TEXTS[0]), status("connected", "")))
    s.drain_notices()
    out = s.receive(frame(status("connected", ""), AM_AAPL, status("auth_success", "")))
    assert len(out.events) == 1 and len(out.statuses) == 2
    assert s.data_to_send() == [] and s.drain_notices() == []
    assert s.close_reason is DisconnectReason.MAX_CONNECTIONS


def test_close_by_the_adapter() -> None:
    s = subscribed()
    s.close(DisconnectReason.DROP)
    assert state(s) is S.CLOSED and s.close_reason is DisconnectReason.DROP
    s.close(DisconnectReason.CLIENT_CLOSED)
    assert s.close_reason is DisconnectReason.DROP  # the first reason wins


GARBAGE = [b"", b"\x00\xff\xfe", b"[", b"{}", b"null", b"[1,2]", b'[{"ev":"status"}]',
           b'[{"ev":"status","status":5}]', b"[NaN]", b'"connected"', b"[[]]"]  # fmt: skip


@pytest.mark.parametrize("stage", range(4))
@pytest.mark.parametrize("garbage", GARBAGE)
def test_garbage_never_raises(stage: int, garbage: bytes) -> None:
    s = session()
    for data in [CONNECTED, AUTH_SUCCESS, frame(AM_AAPL)][:stage]:
        s.receive(data)
    before = state(s)
    s.receive(garbage)
    assert state(s) is before


@given(st.lists(st.one_of(st.binary(max_size=40), frames.map(dumps)), max_size=12))
def test_any_byte_sequence_keeps_the_invariants(chunks: list[bytes]) -> None:
    s = session("AAPL", batch=1)
    sent: list[OutboundMessage] = []
    for chunk in [CONNECTED, *chunks]:
        before = state(s)
        s.receive(chunk)
        out = s.data_to_send()
        if before is S.CLOSED:
            assert out == [] and state(s) is S.CLOSED
        sent += out
    actions = [json.loads(m.data)["action"] for m in sent]
    assert actions[:1] == ["auth"] and actions.count("auth") == 1
    assert actions.count("subscribe") in (0, 1)
    assert_key_hidden(s, sent)


def test_key_never_appears_even_when_the_server_echoes_it() -> None:
    s = session()
    s.receive(CONNECTED)
    sent = s.data_to_send()
    assert KEY.encode() in sent[0].data
    s.drain_notices()
    s.receive(frame(status("error", f"bad key {KEY}")))
    assert s.close_reason is DisconnectReason.AUTH_FAILED
    assert KEY not in repr(s) and KEY not in str(s)
    for n in s.drain_notices():
        assert KEY not in n.text and "***" in n.text
    assert s.redact(f"x{KEY}y") == "x***y"


@pytest.mark.parametrize("wire", ["weird_" + KEY, "error", "success"])
def test_key_hidden_in_status_notices(wire: str) -> None:
    s = subscribed()
    s.receive(frame(status(wire, KEY), status("unexpected", KEY * 3)))
    assert_key_hidden(s)
    assert s.errors == () or KEY not in "".join(s.errors)


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="API key"):
        FeedSession("", REALTIME_CHANNELS, parse_symbols("AAPL"), 1)
    with pytest.raises(ValueError, match="nothing to subscribe"):
        FeedSession(KEY, REALTIME_CHANNELS, parse_symbols(""), 1)
    with pytest.raises(ValueError, match="batch_size"):
        FeedSession(KEY, REALTIME_CHANNELS, parse_symbols("AAPL"), 0)
