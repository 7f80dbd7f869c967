"""Archive bytes back to wire elements: gunzip, line splitting, the line head undone."""

from __future__ import annotations

import gzip

import msgspec
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from polygon_core.archive_lines import archive_line
from polygon_core.events import Channel
from polygon_core.timestamps import iso_ms_bytes
from polygon_sim.replay_lines import LineSplitter, ReplayEvent, parse_ingest_ms, parse_line

T0 = 1_746_627_123_456

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(
    channel=st.sampled_from(list(Channel)),
    symbol=st.none() | st.text(max_size=40),
    ingest_ms=st.integers(0, 4_102_444_800_000),
    fields=st.dictionaries(st.text(), json_values, max_size=6),
    spaced=st.booleans(),
)
def test_an_archive_line_gives_back_its_element(channel, symbol, ingest_ms, fields, spaced):
    raw = msgspec.json.encode(fields)
    if spaced:
        raw = b"{ " + raw[1:] if raw != b"{}" else b"{ }"
    line = archive_line(channel, symbol, iso_ms_bytes(ingest_ms), raw)
    event = parse_line(line.rstrip(b"\n"))
    assert event is not None
    assert (event.channel, event.symbol, event.ingest_ms) == (channel, symbol, ingest_ms)
    assert msgspec.json.decode(event.raw) == fields
    if not spaced:
        assert event.raw == raw  # byte for byte


def test_the_wire_bytes_are_kept_exactly() -> None:
    raw = b'{"ev":"T","sym":"BRK.B","p":192,"s":100,"t":1746627123451,"x":1.50}'
    line = archive_line(Channel.T, "BRK.B", iso_ms_bytes(T0), raw)
    assert parse_line(line) == ReplayEvent(T0, Channel.T, "BRK.B", raw)


def test_another_writers_line_is_read_field_by_field() -> None:
    line = b'{"ingestTs": "2025-05-07T14:12:03.456Z", "ev":"Q","channel":"Q","bp":1.10, "sym":"A"}'
    event = parse_line(line)
    assert event == ReplayEvent(T0, Channel.Q, None, b'{"ev":"Q","bp":1.10,"sym":"A"}')


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b"[1,2]",
        b'{"channel":"X","symbol":"A","ingestTs":"2025-05-07T14:12:03.456Z","ev":"X"}',
        b'{"channel":"T","symbol":"A","ingestTs":"yesterday","ev":"T"}',
        b'{"channel":"T","symbol":"A","ingestTs":"2025-13-07T14:12:03.456Z","ev":"T"}',
        b'{"channel":"T","symbol":"A","ev":"T"}',
        b'{"channel":"T","symbol":"A","ingestTs":"2025-05-07T14:12:03.456Z","ev":"T"',
        b'{"channel":["T"],"ingestTs":"2025-05-07T14:12:03.456Z"}',
    ],
)
def test_unusable_lines_are_none(line) -> None:
    assert parse_line(line) is None


def test_ingest_stamps() -> None:
    assert parse_ingest_ms(b"2025-05-07T14:12:03.456Z") == T0
    assert parse_ingest_ms(b"1970-01-01T00:00:00.000Z") == 0
    stamps = [b"2025-05-07T14:12:03.456", b"2025-05-07 14:12:03.456Z", b"2025-05-07T14:12:03.4x6Z"]
    for bad in stamps:
        assert parse_ingest_ms(bad) is None


GZIP_MAGIC = b"\x1f\x8b"


def split_all(data: bytes, size: int) -> list[bytes]:
    splitter = LineSplitter()
    lines = []
    for at in range(0, len(data), size):
        lines += splitter.feed(data[at : at + size])
    return lines + splitter.finish()


@given(
    lines=st.lists(st.binary(min_size=1, max_size=30).map(lambda b: b.replace(b"\n", b"x"))),
    size=st.integers(1, 64),
    gzipped=st.booleans(),
    final_newline=st.booleans(),
)
def test_lines_come_out_whole_whatever_the_chunks(lines, size, gzipped, final_newline) -> None:
    lines = [line for line in lines if line.strip()]
    data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    # a stream is gzip when it starts with gzip's magic; NDJSON never does (it starts "{")
    assume(gzipped or not data.startswith(GZIP_MAGIC))
    if gzipped:
        half = len(data) // 2  # two gzip members, as concatenated files are
        data = gzip.compress(data[:half]) + gzip.compress(data[half:])
    assert split_all(data, size) == lines


def test_blank_lines_are_dropped_and_cut_gzip_is_an_error() -> None:
    assert split_all(b"a\n\n  \nb\n", 3) == [b"a", b"b"]
    cut = gzip.compress(b"a\nb\n" * 100)[:-10]
    with pytest.raises(ValueError, match="gzip"):
        split_all(cut, 7)
    with pytest.raises(ValueError, match="bad gzip"):
        split_all(b"\x1f\x8bnot gzip at all", 100)
