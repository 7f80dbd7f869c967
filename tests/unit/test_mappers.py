from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from polygon_core.codec import decode_frame
from polygon_core.keys import TtlPolicy
from polygon_core.mappers import encode_record, to_latest_value
from polygon_core.timestamps import iso_ms, iso_ms_bytes
from tests import strategies as s

UPDATED = "2025-05-07T15:04:05.000Z"


def reference_record(wire: dict[str, Any], updated_at: str) -> tuple[str, dict[str, Any]]:
    """SPEC §2's table, written out plainly: key and record for a wire event."""
    sym = wire["sym"]
    if wire["ev"] == "AM":
        return f"stock:agg1m:{sym}", {
            "symbol": sym,
            "start": wire["s"],
            "end": wire["e"],
            "open": wire["o"],
            "high": wire["h"],
            "low": wire["l"],
            "close": wire["c"],
            "volume": wire["v"],
            "vwap": wire["vw"],
            "updatedAt": updated_at,
        }
    if wire["ev"] == "FMV":
        return f"stock:fmv:{sym}", {
            "symbol": sym,
            "price": wire["fmv"],
            "ts": wire["t"],
            "updatedAt": updated_at,
        }
    if wire["ev"] == "T":
        return f"stock:trade:{sym}", {
            "symbol": sym,
            "price": wire["p"],
            "ts": wire["t"],
            "size": wire["s"],
            "conditions": wire.get("c", []),
            "updatedAt": updated_at,
        }
    return f"stock:quote:{sym}", {
        "symbol": sym,
        "bid": wire["bp"],
        "bidSize": wire["bs"],
        "ask": wire["ap"],
        "askSize": wire["as"],
        "ts": wire["t"],
        "updatedAt": updated_at,
    }


def same_json(actual: Any, expected: Any) -> None:
    """Equal values, equal JSON types (an int stays an int), equal key order."""
    assert type(actual) is type(expected), (actual, expected)
    if isinstance(expected, dict):
        assert list(actual) == list(expected)
        for key in expected:
            same_json(actual[key], expected[key])
    elif isinstance(expected, list):
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected, strict=True):
            same_json(a, e)
    else:
        assert actual == expected


@given(s.events)
def test_record_matches_the_spec_table(wire: dict[str, Any]) -> None:
    frame = decode_frame(s.dumps([wire]))
    if not frame.events:  # generated symbol that SPEC §2 rejects
        assert frame.rejects[0].reason == "bad_symbol"
        return
    (event,) = frame.events
    key, expected = reference_record(wire, UPDATED)
    value = to_latest_value(event, UPDATED, TtlPolicy())
    assert value.key == key
    same_json(json.loads(value.value), expected)
    assert value.value == encode_record(event, UPDATED)
    assert b" " not in value.value.replace(wire["sym"].encode(), b"")  # compact


def test_spec_examples_byte_for_byte() -> None:
    frame = decode_frame(
        b'[{"ev":"Q","sym":"AAPL","bp":192.3,"bs":200,"ap":192.4,"as":180,"t":1715097600000},'
        b'{"ev":"T","sym":"AAPL","p":192.34,"s":100,"t":1715097600000},'
        b'{"ev":"T","sym":"AAPL","p":192,"s":100,"t":1715097600000,"c":[12]},'
        b'{"ev":"FMV","sym":"AAPL","fmv":192.34,"t":1715097600000},'
        b'{"ev":"AM","sym":"AAPL","s":1715097600000,"e":1715097659999,"o":191.9,"h":192.7,'
        b'"l":191.8,"c":192.3,"v":21834,"vw":192.1,"a":150.2}]'
    )
    records = [encode_record(e, UPDATED) for e in frame.events]
    assert records == [
        b'{"symbol":"AAPL","bid":192.3,"bidSize":200,"ask":192.4,"askSize":180,'
        b'"ts":1715097600000,"updatedAt":"2025-05-07T15:04:05.000Z"}',
        b'{"symbol":"AAPL","price":192.34,"ts":1715097600000,"size":100,"conditions":[],'
        b'"updatedAt":"2025-05-07T15:04:05.000Z"}',
        b'{"symbol":"AAPL","price":192,"ts":1715097600000,"size":100,"conditions":[12],'
        b'"updatedAt":"2025-05-07T15:04:05.000Z"}',
        b'{"symbol":"AAPL","price":192.34,"ts":1715097600000,"updatedAt":"2025-05-07T15:04:05.000Z"}',
        b'{"symbol":"AAPL","start":1715097600000,"end":1715097659999,"open":191.9,"high":192.7,'
        b'"low":191.8,"close":192.3,"volume":21834,"vwap":192.1,"updatedAt":"2025-05-07T15:04:05.000Z"}',
    ]


def test_ttls_per_key_type() -> None:
    ttl = TtlPolicy(agg1m_s=1, fmv_s=2, trade_s=3, quote_s=4)
    frame = decode_frame(
        b'[{"ev":"AM","sym":"A","s":1,"e":2,"o":1,"h":1,"l":1,"c":1,"v":1,"vw":1},'
        b'{"ev":"FMV","sym":"A","fmv":1,"t":1},{"ev":"T","sym":"A","p":1,"s":1,"t":1},'
        b'{"ev":"Q","sym":"A","bp":1,"bs":1,"ap":1,"as":1,"t":1}]'
    )
    assert [to_latest_value(e, UPDATED, ttl).ttl_s for e in frame.events] == [1, 2, 3, 4]


def test_iso_ms_format() -> None:
    assert iso_ms(0) == "1970-01-01T00:00:00.000Z"
    assert iso_ms(1746630245007) == "2025-05-07T15:04:05.007Z"
    assert iso_ms(-5) == "1970-01-01T00:00:00.000Z"


@given(st.lists(st.integers(min_value=-10, max_value=253402300799999), max_size=20))
def test_iso_ms_bytes_equals_iso_ms_encoded(times: list[int]) -> None:
    """The per-second cache never serves a stale second (the times jump back and forth)."""
    for t in times + [t + 1 for t in times] + [t + 1000 for t in times]:
        assert iso_ms_bytes(t) == iso_ms(t).encode()
