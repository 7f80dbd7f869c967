from __future__ import annotations

import json
import math

import msgspec
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from polygon_core.archive_lines import archive_blocks, archive_line
from polygon_core.codec import (
    DecodedFrame,
    FrameDecoder,
    RejectReason,
    decode_frame,
)
from polygon_core.events import (
    Channel,
    FairMarketValue,
    MinuteAggregate,
    Quote,
    StatusMessage,
    Trade,
)
from tests import strategies as s

FORBIDDEN = set("*?[]{}:")


def plain_symbol_ok(sym: str) -> bool:
    """The SPEC §2 symbol rule, written plainly."""
    if not 1 <= len(sym) <= 32:
        return False
    return not any(
        ch.isspace() or ch in FORBIDDEN or ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in sym
    )


def accounted(frame: DecodedFrame, elements: int) -> None:
    assert len(frame.events) + len(frame.statuses) + len(frame.rejects) == elements
    assert frame.element_count == elements


def test_documented_examples_decode_to_typed_events() -> None:
    frame = decode_frame(
        b'[{"ev":"AM","sym":"GTE","v":4110,"av":9470157,"op":0.4372,"vw":0.4488,"o":0.4488,'
        b'"c":0.4486,"h":0.4489,"l":0.4486,"a":0.4352,"z":685,"s":1610144640000,"e":1610144700000},'
        b'{"ev":"FMV","fmv":189.22,"sym":"AAPL","t":1678220098130},'
        b'{"ev":"T","sym":"MSFT","x":4,"i":"12345","z":3,"p":114.125,"s":100,"c":[0,12],'
        b'"t":1536036818784,"q":3681328},'
        b'{"ev":"Q","sym":"MSFT","bx":4,"bp":114.125,"bs":100,"ax":7,"ap":114.128,"as":160,"c":0,'
        b'"i":[604],"t":1536036818784,"q":50385480,"z":3}]'
    )
    assert frame.rejects == []
    am, fmv, trade, quote = frame.events
    assert am == MinuteAggregate(
        symbol="GTE",
        start_ms=1610144640000,
        end_ms=1610144700000,
        open=0.4488,
        high=0.4489,
        low=0.4486,
        close=0.4486,
        volume=4110,
        vwap=0.4488,
    )
    assert fmv == FairMarketValue(symbol="AAPL", price=189.22, timestamp=1678220098130)
    assert trade == Trade(
        symbol="MSFT", price=114.125, size=100, timestamp_ms=1536036818784, conditions=[0, 12]
    )
    assert quote == Quote(
        symbol="MSFT",
        bid_price=114.125,
        bid_size=100,
        ask_price=114.128,
        ask_size=160,
        timestamp_ms=1536036818784,
    )
    assert [e.channel for e in frame.events] == [Channel.AM, Channel.FMV, Channel.T, Channel.Q]


def test_trade_without_conditions_and_integer_price() -> None:
    (trade,) = decode_frame(b'[{"ev":"T","sym":"BRK.B","p":192,"s":40,"t":1781622376036}]').events
    assert isinstance(trade, Trade)
    assert trade.conditions is None
    assert type(trade.price) is int and trade.price == 192


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"not json", RejectReason.INVALID_JSON),
        (b"", RejectReason.INVALID_JSON),
        (b'[{"ev":"T","p":NaN}]', RejectReason.INVALID_JSON),
        (b"[1,", RejectReason.INVALID_JSON),
        (b"\xff\xfe", RejectReason.INVALID_JSON),
        (b'{"ev":"status","status":"connected"}', RejectReason.NOT_ARRAY),
        (b'"text"', RejectReason.NOT_ARRAY),
        (b"[1]", RejectReason.NOT_OBJECT),
        (b'[{"sym":"AAPL"}]', RejectReason.MISSING_EV),
        (b'[{"ev":"A","sym":"AAPL"}]', RejectReason.UNKNOWN_EV),
        (b'[{"ev":7,"sym":"AAPL"}]', RejectReason.UNKNOWN_EV),
        (b'[{"ev":"T","sym":"AAPL","s":1,"t":1}]', RejectReason.MISSING_FIELD),
        (b'[{"ev":"T","sym":"AAPL","p":"1.5","s":1,"t":1}]', RejectReason.INVALID_TYPE),
        (b'[{"ev":"T","sym":"AAPL","p":true,"s":1,"t":1}]', RejectReason.INVALID_TYPE),
        (b'[{"ev":"T","sym":"AAPL","p":1,"s":1,"t":1,"c":"x"}]', RejectReason.INVALID_TYPE),
        (b'[{"ev":"FMV","sym":"AAPL","fmv":"189.2","t":1}]', RejectReason.INVALID_TYPE),
        (
            b'[{"ev":"Q","sym":"AAPL","bp":1e999,"bs":1,"ap":1,"as":1,"t":1}]',
            RejectReason.NON_FINITE,
        ),
        (b'[{"ev":"Q","sym":"","bp":1,"bs":1,"ap":1,"as":1,"t":1}]', RejectReason.BAD_SYMBOL),
        (b'[{"ev":"Q","sym":"A B","bp":1,"bs":1,"ap":1,"as":1,"t":1}]', RejectReason.BAD_SYMBOL),
        (b'[{"ev":"Q","sym":"A*","bp":1,"bs":1,"ap":1,"as":1,"t":1}]', RejectReason.BAD_SYMBOL),
        (b'[{"ev":"Q","sym":"a:b","bp":1,"bs":1,"ap":1,"as":1,"t":1}]', RejectReason.BAD_SYMBOL),
        (
            b'[{"ev":"Q","sym":"a\\u0000","bp":1,"bs":1,"ap":1,"as":1,"t":1}]',
            RejectReason.BAD_SYMBOL,
        ),
        (
            b'[{"ev":"Q","sym":"' + b"A" * 33 + b'","bp":1,"bs":1,"ap":1,"as":1,"t":1}]',
            RejectReason.BAD_SYMBOL,
        ),
    ],
)
def test_rejects_carry_a_reason(frame: bytes, reason: RejectReason) -> None:
    decoded = decode_frame(frame)
    assert decoded.events == [] and decoded.statuses == []
    assert [r.reason for r in decoded.rejects] == [reason]
    excerpt = decoded.rejects[0].excerpt
    assert excerpt and excerpt in frame or frame == b"" and excerpt == b""


def test_one_bad_element_never_sinks_the_others() -> None:
    good = b'{"ev":"T","sym":"AAPL","p":1,"s":1,"t":1}'
    frame = decode_frame(b"[" + b",".join([good, b'{"ev":"LULD","T":"X"}', b"3", good]) + b"]")
    assert len(frame.events) == 2
    assert [r.reason for r in frame.rejects] == [RejectReason.UNKNOWN_EV, RejectReason.NOT_OBJECT]


def test_status_and_data_share_a_frame() -> None:
    frame = decode_frame(
        b'[{"ev":"status","status":"success","message":"subscribed to: T.AAPL"},'
        b'{"ev":"T","sym":"AAPL","p":1,"s":1,"t":1}]'
    )
    assert frame.statuses == [StatusMessage(status="success", message="subscribed to: T.AAPL")]
    assert len(frame.events) == 1


def test_rejects_of_known_channels_keep_channel_and_symbol_and_are_archived() -> None:
    frame = decode_frame(
        b'[{"ev":"T","sym":"AAPL","p":"x","s":1,"t":1},{"ev":"Q","sym":5},{"ev":"A","sym":"Z"}]',
        keep_raw=True,
    )
    assert [(r.channel, r.symbol) for r in frame.rejects] == [
        (Channel.T, "AAPL"),
        (Channel.Q, None),
        (None, None),
    ]
    assert [(c, sym) for c, sym, _ in frame.archive] == [(Channel.T, "AAPL"), (Channel.Q, None)]


def test_archive_is_empty_unless_asked_for() -> None:
    data = b'[{"ev":"T","sym":"AAPL","p":1,"s":1,"t":1}]'
    assert decode_frame(data).archive == []
    assert len(decode_frame(data, keep_raw=True).archive) == 1


def test_str_input_and_memoryview_input() -> None:
    text = '[{"ev":"FMV","sym":"AAPL","fmv":1.5,"t":2}]'
    assert decode_frame(text).events == decode_frame(memoryview(text.encode())).events != []


@given(s.frames)
def test_every_element_is_accounted_for_and_matches_a_plain_reading(elements: list) -> None:
    data = s.dumps(elements)
    frame = decode_frame(data, keep_raw=True)
    accounted(frame, len(elements))
    expected_events = [
        e
        for e in elements
        if isinstance(e, dict) and e.get("ev") in ("AM", "FMV", "T", "Q") and plain_valid(e)
    ]
    assert [e.symbol for e in frame.events] == [e["sym"] for e in expected_events]
    assert len(frame.statuses) == sum(
        isinstance(e, dict) and e.get("ev") == "status" for e in elements
    )
    archived = [
        e for e in elements if isinstance(e, dict) and e.get("ev") in ("AM", "FMV", "T", "Q")
    ]
    assert len(frame.archive) == len(archived)
    for (channel, symbol, raw), element in zip(frame.archive, archived, strict=True):
        assert channel == element["ev"]
        assert json.loads(bytes(raw)) == element
        assert symbol == (element["sym"] if isinstance(element.get("sym"), str) else None)


REQUIRED = {
    "AM": {
        "sym": str,
        "s": "n",
        "e": "n",
        "o": "n",
        "h": "n",
        "l": "n",
        "c": "n",
        "v": "n",
        "vw": "n",
    },
    "FMV": {"sym": str, "fmv": "n", "t": "n"},
    "T": {"sym": str, "p": "n", "s": "n", "t": "n"},
    "Q": {"sym": str, "bp": "n", "bs": "n", "ap": "n", "as": "n", "t": "n"},
}


def plain_valid(e: dict) -> bool:
    for field, kind in REQUIRED[e["ev"]].items():
        if field not in e:
            return False
        v = e[field]
        if kind is str:
            if not isinstance(v, str):
                return False
        elif isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return False
    if e["ev"] == "T" and "c" in e:
        c = e["c"]
        if not (isinstance(c, list) and all(type(x) is int for x in c)):
            return False
    return plain_symbol_ok(e["sym"])


@given(st.binary(max_size=300))
@example(b"[" * 10000)
@example(b'[{"ev":"T","x":' + b"[" * 5000 + b"]" * 5000 + b"}]")
@example(b'[{"ev":"T","sym":"A","p":1e400,"s":1,"t":1}]')
def test_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    frame = decode_frame(data, keep_raw=True)
    if frame.element_count == 0:  # only an empty array yields nothing at all
        assert json.loads(data) == []
    if not data.strip().startswith(b"["):
        assert len(frame.rejects) == 1


@given(s.frames, st.data())
def test_never_raises_on_mutated_valid_frames(elements: list, data: st.DataObject) -> None:
    raw = bytearray(s.dumps(elements))
    for _ in range(data.draw(st.integers(1, 4))):
        if not raw:
            break
        i = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.sampled_from(["flip", "drop", "dup", "insert"]))
        if op == "flip":
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "drop":
            del raw[i]
        elif op == "dup":
            raw[i:i] = raw[i : i + data.draw(st.integers(1, 8))]
        else:
            raw[i:i] = data.draw(
                st.sampled_from([b",", b"]", b"{", b'"', b"1e999", b"null", b"\x00"])
            )
    frame = decode_frame(bytes(raw), keep_raw=True)
    if frame.element_count == 0:  # only an empty array yields nothing at all
        assert json.loads(bytes(raw)) == []
    for channel, _symbol, element in frame.archive:
        line = archive_line(channel, _symbol, b"2025-01-01T00:00:00.000Z", element)
        assert json.loads(line)["channel"] == channel


def test_decoders_are_reused_and_symbol_cache_is_bounded() -> None:
    decoder = FrameDecoder()
    for i in range(70_000):
        decoder.decode(s.dumps([{"ev": "FMV", "sym": f"S{i}", "fmv": 1, "t": 1}]))
    assert len(decoder._valid_symbols) <= 1 << 16


def test_archive_line_keeps_wire_bytes_exactly() -> None:
    element = b'{"ev":"T","sym":"BRK.B","p":192.50,"s":40,"t":1781622376036,"ds":"40.0","zz":1E+2}'
    frame = decode_frame(b"[" + element + b"]", keep_raw=True)
    ((channel, symbol, raw),) = frame.archive
    line = archive_line(channel, symbol, b"2025-05-07T15:04:05.123Z", raw)
    assert line == (
        b'{"channel":"T","symbol":"BRK.B","ingestTs":"2025-05-07T15:04:05.123Z",'
        + element[1:]
        + b"\n"
    )
    assert list(json.loads(line))[:3] == ["channel", "symbol", "ingestTs"]


def test_archive_line_with_whitespace_and_escapes() -> None:
    raw = msgspec.Raw(b'{ \n"ev":"Q","sym":"A\\"B"}')
    line = archive_line(Channel.Q, 'A"B', b"2025-05-07T15:04:05.123Z", raw)
    parsed = json.loads(line)
    assert parsed["symbol"] == 'A"B' and parsed["ev"] == "Q"
    assert archive_line(Channel.T, None, b"x", msgspec.Raw(b"{ }")) == (
        b'{"channel":"T","symbol":null,"ingestTs":"x"}\n'
    )


@given(s.events)
def test_decode_of_encode_is_identity(wire: dict) -> None:
    """STYLE's round-trip property: a decoded event re-encoded with msgspec decodes equal."""
    frame = decode_frame(s.dumps([wire]))
    for event in frame.events:
        again = decode_frame(b"[" + msgspec.json.encode(event) + b"]").events
        assert again == [event]


@given(s.frames)
def test_fast_path_and_element_path_agree(elements: list) -> None:
    """A decoder that knows every symbol takes the whole-frame path; a fresh one takes the
    per-element path. Both must give the same events, statuses, rejects and archive."""
    data = s.dumps(elements)
    for keep_raw in (False, True):
        warm = FrameDecoder()
        warm.decode(data)  # learns the valid symbols
        fast, slow = (
            warm.decode(data, keep_raw=keep_raw),
            FrameDecoder().decode(data, keep_raw=keep_raw),
        )
        assert fast.events == slow.events and fast.statuses == slow.statuses
        assert [r.reason for r in fast.rejects] == [r.reason for r in slow.rejects]
        assert [(c, sym, bytes(raw)) for c, sym, raw in fast.archive] == [
            (c, sym, bytes(raw)) for c, sym, raw in slow.archive
        ]
        stamp = b"2025-01-01T00:00:00.000Z"
        for (c, sym, raw), element in zip(fast.archive, slow.archive, strict=True):
            assert archive_line(c, sym, stamp, raw) == archive_line(
                *element[:2], stamp, bytes(element[2])
            )


def blocks_from_lines(frame: DecodedFrame, stamp: bytes) -> list[tuple[Channel, bytes, int]]:
    """archive_blocks written plainly: archive_line per element, joined per channel."""
    chunks: dict[Channel, list[bytes]] = {}
    for channel, symbol, raw in frame.archive:
        chunks.setdefault(channel, []).append(archive_line(channel, symbol, stamp, raw))
    return [(c, b"".join(lines), len(lines)) for c, lines in chunks.items()]


@given(s.frames, st.booleans())
def test_archive_blocks_equal_the_lines_joined_per_channel(elements: list, spaced: bool) -> None:
    """Both paths (the fast one splits the frame at '},{'), compact or spaced JSON."""
    data = json.dumps(elements).encode() if spaced else s.dumps(elements)
    stamp = b"2025-01-01T00:00:00.000Z"
    warm = FrameDecoder()
    warm.decode(data)
    for frame in (warm.decode(data, keep_raw=True), FrameDecoder().decode(data, keep_raw=True)):
        assert archive_blocks(frame, stamp) == blocks_from_lines(frame, stamp)


FMV = b'{"ev":"FMV","sym":"B","fmv":1,"t":2}'


@pytest.mark.parametrize(
    ("data", "split"),
    [
        (b'[{"ev":"T","sym":"A","p":1,"s":1,"t":1},' + FMV + b"]", True),
        (b'[{"ev":"T","sym":"A","p":1,"s":1,"t":1,"ds":"},{"},' + FMV + b"]", False),
        (b'[{"ev":"T","sym":"A","p":1,"s":1,"t":1}, ' + FMV + b"]", False),
        (b'[{"ev":"T","sym":"A","p":1,"s":1,"t":1,"ds":"x\\ty"},' + FMV + b"]", True),
        (b'[{"ev":"T","sym":"A","p":1,"s":1,"t":1,"ds":"x y"},' + FMV + b"]", False),
        (b'[ {"ev":"T","sym":"A","p":1,"s":1,"t":1}]', False),
        (b'[{"ev":"T","sym":"A","p":1,"s":1,"t":1,"c":[1]}\n]', False),
        (b"[" + FMV + b"]", True),
    ],
)
def test_archive_fast_path_split_is_used_only_when_exact(data: bytes, split: bool) -> None:
    """A '},{' inside an element or any whitespace byte sends the frame to the exact pass."""
    warm = FrameDecoder()
    warm.decode(data)
    frame = warm.decode(data, keep_raw=True)
    assert len(frame.events) == data.count(b'"ev"') and not frame.rejects
    assert (frame.bodies is not None) is split
    assert [bytes(raw) for _c, _s, raw in frame.archive] == [
        bytes(raw) for raw in msgspec.json.decode(data, type=list[msgspec.Raw])
    ]
    stamp = b"2025-01-01T00:00:00.000Z"
    assert archive_blocks(frame, stamp) == blocks_from_lines(frame, stamp)


ODD_STRINGS = st.one_of(
    st.sampled_from(["},{", '{"ev":"T"}', "}]", "[{", '\\"', 'a"b', "é", "😀", "\u2028", "\\n"]),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=8),
)
CHANNEL_NAMES = ("AM", "FMV", "T", "Q")
ODD_SYMBOLS = st.sampled_from(['A"B', "A\\B", "É", "Ω.A", "😀", "a-b", "BRK.B", "X"])


@st.composite
def odd_frames(draw: st.DrawFn) -> tuple[bytes, int]:
    """Frames with odd but valid elements: strings holding braces, '},{', escaped quotes,
    unicode; odd symbols; statuses and rejects mixed in; compact, spaced or pretty printed
    (line breaks inside elements). Returns the bytes and how many events they hold."""
    elements: list[object] = []
    for _ in range(draw(st.integers(1, 8))):
        event = draw(s.events)
        if draw(st.booleans()):
            event["sym"] = draw(ODD_SYMBOLS)
        if event["ev"] in ("T", "Q") and draw(st.booleans()):
            event["ds"] = draw(ODD_STRINGS)
        elements.append(event)
    for _ in range(draw(st.integers(0, 2))):
        elements.insert(
            draw(st.integers(0, len(elements))), draw(st.one_of(s.statuses, s.junk_elements))
        )
    style = draw(st.sampled_from(["compact", "spaced", "pretty", "ascii"]))
    if style == "compact":
        data = json.dumps(elements, separators=(",", ":"), ensure_ascii=False).encode()
    elif style == "ascii":
        data = s.dumps(elements)  # non-ASCII as \\u escapes
    else:
        data = json.dumps(elements, indent=1 if style == "pretty" else None).encode()
    return data, sum(isinstance(e, dict) and e.get("ev") in CHANNEL_NAMES for e in elements)


@given(odd_frames())
def test_archive_blocks_fast_path_equals_per_element_reference(frame_and_count: tuple) -> None:
    """The whole-frame fast path (a warm decoder: the frame split at '},{', lines built per
    channel in one join) against the per-element reference: a fresh decoder's list[Raw]
    pass and :func:`archive_line` for each element, joined per channel. Byte for byte."""
    data, _ = frame_and_count
    stamp = b"2025-01-01T00:00:00.000Z"
    warm = FrameDecoder()
    warm.decode(data)  # learns the valid symbols
    fast = warm.decode(data, keep_raw=True)
    reference = FrameDecoder().decode(data, keep_raw=True)
    assert archive_blocks(fast, stamp) == blocks_from_lines(reference, stamp)
    for channel, block, count in archive_blocks(fast, stamp):
        lines = block.split(b"\n")
        assert lines[-1] == b"" and len(lines) == count + 1
        for line in lines[:-1]:
            parsed = json.loads(line)
            assert list(parsed)[:3] == ["channel", "symbol", "ingestTs"]
            assert parsed["channel"] == channel


def test_odd_frames_reach_the_fast_path() -> None:
    """The property above is not vacuous: frames like its odd ones do take the split."""
    data = s.dumps(
        [
            {"ev": "T", "sym": 'A"B', "p": 1, "s": 1, "t": 1, "ds": "{x}"},
            {"ev": "Q", "sym": "É", "bp": 1, "bs": 1, "ap": 1, "as": 1, "t": 1, "ds": 'q"'},
        ]
    )
    warm = FrameDecoder()
    warm.decode(data)
    frame = warm.decode(data, keep_raw=True)
    assert frame.bodies is not None
    assert archive_blocks(frame, b"x") == blocks_from_lines(
        FrameDecoder().decode(data, keep_raw=True), b"x"
    )
