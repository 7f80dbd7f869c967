"""Hypothesis strategies for wire events (as plain dicts) and frames.

Floats are finite: JSON has no NaN/Infinity, and NaN would never compare equal.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

REAL_SYMBOLS = ["AAPL", "MSFT", "BRK.A", "BRK.B", "AMpB", "BACpB", "BCpC", "AGM.A", "X", "GOOGL"]

symbols = st.one_of(
    st.sampled_from(REAL_SYMBOLS),
    st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-_/^",
        min_size=1,
        max_size=32,
    ),
)
prices = st.one_of(
    st.integers(min_value=0, max_value=10**6),
    st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False),
    st.floats(allow_nan=False, allow_infinity=False),
)
sizes = st.one_of(st.integers(min_value=0, max_value=10**9), st.floats(0, 1e9))
times = st.integers(min_value=0, max_value=2**62)
extras = st.dictionaries(
    st.sampled_from(["x", "z", "q", "pt", "i", "ds", "trfi", "otc", "zz_new"]),
    st.one_of(
        st.integers(), st.text(max_size=5), st.booleans(), st.lists(st.integers(), max_size=3)
    ),
    max_size=4,
)


@st.composite
def am_events(draw: Any) -> dict[str, Any]:
    s = draw(times)
    ev = {
        "ev": "AM",
        "sym": draw(symbols),
        "v": draw(sizes),
        "vw": draw(prices),
        "o": draw(prices),
        "c": draw(prices),
        "h": draw(prices),
        "l": draw(prices),
        "s": s,
        "e": s + 60000,
    }
    if draw(st.booleans()):
        ev.update(av=draw(sizes), op=draw(prices), a=draw(prices), z=draw(sizes))
    return ev


@st.composite
def fmv_events(draw: Any) -> dict[str, Any]:
    return {"ev": "FMV", "fmv": draw(prices), "sym": draw(symbols), "t": draw(times)}


@st.composite
def trade_events(draw: Any) -> dict[str, Any]:
    ev = {"ev": "T", "sym": draw(symbols), "p": draw(prices), "s": draw(sizes), "t": draw(times)}
    if draw(st.booleans()):
        ev["c"] = draw(st.lists(st.integers(0, 60), max_size=4))
    ev.update(draw(extras))
    return ev


@st.composite
def quote_events(draw: Any) -> dict[str, Any]:
    ev = {
        "ev": "Q",
        "sym": draw(symbols),
        "bp": draw(prices),
        "bs": draw(sizes),
        "ap": draw(prices),
        "as": draw(sizes),
        "t": draw(times),
    }
    ev.update(draw(extras))
    return ev


events = st.one_of(am_events(), fmv_events(), trade_events(), quote_events())

statuses = st.builds(
    lambda s, m: {"ev": "status", "status": s, "message": m},
    st.sampled_from(["connected", "auth_success", "success", "error", "max_connections"]),
    st.text(max_size=20),
)

junk_elements = st.one_of(
    st.integers(),
    st.text(max_size=5),
    st.none(),
    st.lists(st.integers(), max_size=2),
    st.fixed_dictionaries({"ev": st.sampled_from(["A", "LULD", "NOI", "", "t"]), "sym": symbols}),
    st.fixed_dictionaries({"sym": symbols}),
    # a known channel with a wrong type or a missing field
    st.builds(
        lambda d, k: {key: v for key, v in d.items() if key != k},
        trade_events(),
        st.sampled_from(["p", "s", "t", "sym"]),
    ),
    st.builds(
        lambda d, v: {**d, "bp": v},
        quote_events(),
        st.one_of(st.text(max_size=3), st.booleans(), st.none()),
    ),
)


def dumps(value: Any) -> bytes:
    """Compact JSON the way Polygon writes it."""
    return json.dumps(value, separators=(",", ":")).encode()


frames = st.lists(st.one_of(events, statuses, junk_elements), max_size=12)
