"""Topics, subscribe batches and control frames (polygon-protocol.md §2, §6, §9)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polygon_core.events import Channel
from polygon_core.subscriptions import (
    DELAYED_CHANNELS,
    REALTIME_CHANNELS,
    FeedRole,
    SymbolSelection,
    auth_message,
    parse_symbols,
    split_topic,
    subscribe_message,
    subscribe_params,
    subscription_topics,
)
from tests.strategies import symbols as symbol_strategy

channel_sets = st.sampled_from([REALTIME_CHANNELS, DELAYED_CHANNELS, (Channel.T,)])


def test_host_roles() -> None:
    assert REALTIME_CHANNELS == (Channel.AM, Channel.FMV)
    assert DELAYED_CHANNELS == (Channel.T, Channel.Q)
    assert FeedRole.REALTIME.channels == REALTIME_CHANNELS
    assert FeedRole.DELAYED.channels == DELAYED_CHANNELS


# -- parse_symbols ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("AAPL,MSFT,TSLA", ("AAPL", "MSFT", "TSLA")),
        (" AAPL , MSFT\t,\nTSLA ", ("AAPL", "MSFT", "TSLA")),
        ("AAPL,,MSFT,", ("AAPL", "MSFT")),
        ("AAPL,MSFT,AAPL", ("AAPL", "MSFT")),
        ("BRK.B,AMpB,AMPB,brk.b", ("BRK.B", "AMpB", "AMPB", "brk.b")),
        ("", ()),
        (" , ,", ()),
    ],
)
def test_parse_symbols(text: str, expected: tuple[str, ...]) -> None:
    assert parse_symbols(text) == SymbolSelection(False, expected)


@pytest.mark.parametrize(
    ("text", "symbols"),
    [("*", ()), (" * ", ()), ("AAPL,*", ("AAPL",)), ("*,AAPL,*,MSFT", ("AAPL", "MSFT"))],
)
def test_parse_symbols_wildcard(text: str, symbols: tuple[str, ...]) -> None:
    selection = parse_symbols(text)
    assert selection.wildcard
    assert selection.symbols == symbols


@pytest.mark.parametrize("text", ["AA PL", "AAPL,A:B", "A*", "AAPL,MS{FT", "X" * 33, "A\x00B"])
def test_parse_symbols_rejects_invalid(text: str) -> None:
    with pytest.raises(ValueError, match="invalid symbol"):
        parse_symbols(text)


def test_parse_symbols_names_every_invalid_symbol() -> None:
    with pytest.raises(ValueError) as info:
        parse_symbols("AAPL,A:B,MSFT,C?D")
    assert "'A:B'" in str(info.value) and "'C?D'" in str(info.value)
    assert "AAPL" not in str(info.value)


def test_selection_truthiness_and_merge() -> None:
    assert not parse_symbols("")
    assert parse_symbols("*")
    merged = parse_symbols("AAPL,MSFT").with_symbols(["MSFT", "BRK.B", "AAPL"])
    assert merged == SymbolSelection(False, ("AAPL", "MSFT", "BRK.B"))
    with pytest.raises(TypeError):
        SymbolSelection.of("AAPL")  # a bare string is not a list of symbols


@given(st.lists(symbol_strategy, max_size=30))
def test_parse_symbols_roundtrip(items: list[str]) -> None:
    selection = parse_symbols(",".join(items))
    assert not selection.wildcard
    assert list(selection.symbols) == list(dict.fromkeys(items))


# -- subscribe_params --------------------------------------------------------------------


def test_subscribe_params_expands_each_symbol_to_the_host_channels() -> None:
    selection = parse_symbols("AAPL,BRK.B,AMpB")
    assert subscribe_params(REALTIME_CHANNELS, selection, 2) == [
        "AM.AAPL,FMV.AAPL,AM.BRK.B,FMV.BRK.B",
        "AM.AMpB,FMV.AMpB",
    ]
    assert subscribe_params(DELAYED_CHANNELS, selection, 500) == [
        "T.AAPL,Q.AAPL,T.BRK.B,Q.BRK.B,T.AMpB,Q.AMpB"
    ]


def test_subscribe_params_wildcard_is_one_message() -> None:
    assert subscribe_params(REALTIME_CHANNELS, parse_symbols("AAPL,*"), 1) == ["AM.*,FMV.*"]
    assert subscribe_params(DELAYED_CHANNELS, ["*"], 500) == ["T.*,Q.*"]
    assert subscription_topics(DELAYED_CHANNELS, parse_symbols("*")) == ["T.*", "Q.*"]


def test_subscribe_params_accepts_plain_lists_and_dedupes() -> None:
    assert subscribe_params([Channel.T], ["A", "B", "A"], 10) == ["T.A,T.B"]


def test_subscribe_params_nothing_to_subscribe() -> None:
    assert subscribe_params(REALTIME_CHANNELS, [], 10) == []


@pytest.mark.parametrize("batch_size", [0, -1])
def test_subscribe_params_rejects_bad_batch_size(batch_size: int) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        subscribe_params(REALTIME_CHANNELS, ["AAPL"], batch_size)


def test_subscribe_params_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="channels"):
        subscribe_params([], ["AAPL"], 1)
    with pytest.raises(ValueError, match="invalid symbol"):
        subscribe_params(REALTIME_CHANNELS, ["AAPL,MSFT"], 1)  # a comma would split the topic
    with pytest.raises(ValueError, match="invalid symbol"):
        subscribe_params(REALTIME_CHANNELS, ["A B"], 1)


@given(
    st.lists(symbol_strategy, max_size=60),
    channel_sets,
    st.integers(min_value=1, max_value=25),
)
def test_every_topic_exactly_once_within_batches(
    items: list[str], channels: tuple[Channel, ...], batch_size: int
) -> None:
    params = subscribe_params(channels, items, batch_size)
    unique = list(dict.fromkeys(items))
    expected = [f"{c.value}.{s}" for s in unique for c in channels]
    sent = [topic for p in params for topic in p.split(",")]
    assert sent == expected  # every topic once, symbol order and channel order kept
    assert sent == subscription_topics(channels, items)
    for p in params:
        assert p and " " not in p
        assert len(p.split(",")) <= batch_size * len(channels)
        assert {split_topic(t)[1] for t in p.split(",")} <= set(unique)
    assert len(params) == -(-len(unique) // batch_size)
    for topic in sent:  # dots and case survive the round trip
        channel, ticker = split_topic(topic)
        assert Channel(channel) in channels and ticker in unique


# -- control frames ------------------------------------------------------------------------


def test_subscribe_message_is_compact_json() -> None:
    assert subscribe_message("AM.AAPL,FMV.AAPL") == (
        b'{"action":"subscribe","params":"AM.AAPL,FMV.AAPL"}'
    )


def test_auth_message_is_compact_json() -> None:
    assert auth_message("abc123") == b'{"action":"auth","params":"abc123"}'


@given(st.text())
def test_auth_message_escapes_any_key(key: str) -> None:
    assert json.loads(auth_message(key)) == {"action": "auth", "params": key}


# -- split_topic ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("T.BRK.B", ("T", "BRK.B")),
        ("AM.AAPL", ("AM", "AAPL")),
        ("FMV.*", ("FMV", "*")),
        ("Q.AMpB", ("Q", "AMpB")),
        ("T.A.B.C", ("T", "A.B.C")),
    ],
)
def test_split_topic_at_first_dot(topic: str, expected: tuple[str, str]) -> None:
    assert split_topic(topic) == expected


@pytest.mark.parametrize("topic", ["AAPL", "", ".AAPL", "T.", "."])
def test_split_topic_rejects_non_topics(topic: str) -> None:
    with pytest.raises(ValueError):
        split_topic(topic)
