"""Seeded frames for the fuzz run (issue 8): a generator, a mutator and a reference reading.

:class:`FrameSource` makes realistic frames (all four channels, statuses, other feeds'
events, dotted and preferred tickers, integer and float prices, optional fields, late and
equal event times) and mutates about half of them: structurally (duplicate, drop or shuffle
elements, swap a field's type, drop a field, huge numbers, NaN/Infinity, unicode, nested
junk, a non-array or empty top level, duplicate keys, pretty printing) or byte-wise (flips,
truncation, splicing two frames, inserted tokens, deep nesting, a BOM). It is a plain
``random.Random``: hypothesis would be far too slow for a million frames.

:func:`reference_elements` and :func:`reference_kind` are the independent reading the
decoder is checked against: stdlib :mod:`json` on strictly decoded UTF-8, with NaN/Infinity
refused, plus SPEC §2's rules written plainly.
"""

from __future__ import annotations

import functools
import json
import math
import random
import re
import sys
from typing import Any

CHANNELS = ("AM", "FMV", "T", "Q")
REQUIRED_NUMBERS: dict[str, tuple[str, ...]] = {
    "AM": ("s", "e", "o", "h", "l", "c", "v", "vw"),
    "FMV": ("fmv", "t"),
    "T": ("p", "s", "t"),
    "Q": ("bp", "bs", "ap", "as", "t"),
}
GOOD_SYMBOLS = (
    "AAPL", "MSFT", "BRK.A", "BRK.B", "AMpB", "BACpB", "BCpC", "AGM.A", "X", "GOOGL",
    "SPY", "TSLA", "NVDA", "AAPL.WS", "ABRpD", "AAMpA", "F", "QQQ", "BF.B", "HEI.A",
)  # fmt: skip
ODD_SYMBOLS = ("É", "Ω.A", "A" * 32, "😀", "a-b", "A/B", "x^y", "A\u200bB", 'A"B', "A\\B")
"""Valid but unusual: SPEC §2 keeps any symbol without whitespace, controls or ``*?[]{}:``."""
BAD_SYMBOLS = (
    "", "A" * 33, "A B", "A*", "A?", "[A]", "{A}", "A:B", "A\tB", "A\x00", "A\x7f",
    "A\x85", "A\u00a0B", "A\u2003", "\u3000", "A\nB",
)  # fmt: skip
STATUSES = ("connected", "auth_success", "auth_failed", "success", "error", "max_connections")
HUGE_TOKENS = (
    b"1e999", b"-1e999", b"1E+400", b"123456789012345678901234567890", b"18446744073709551616",
    b"-9223372036854775809", b"1e-400", b"-0", b"-0.0", b"4" * 4301, b"4" * 4300, b"0.1e1",
)  # fmt: skip
INSERT_TOKENS = (
    b",", b"]", b"[", b"{", b"}", b'"', b":", b"NaN", b"Infinity", b"-Infinity", b"null",
    b"\x00", b"\\u0000", b'"\\ud800"', b"\xff", b"\xc3\xa9", b"\xed\xa0\x80", b" ", b"\n",
    b"true", b"1e999", b"\xef\xbb\xbf", b'"ev":"Q",', b'"sym":"B",', b'"p":"1",', b"{}", b"[]",
)  # fmt: skip
NESTING_DEPTHS = (2, 10, 100, 500, 800, 1200, 5000)
"""Deep nesting, kept outside 900..1100: the stdlib's and msgspec's recursion limits both
sit near 1000 and shift with the caller's stack depth, so the two readings may disagree
there for reasons that say nothing about the decoder."""

_NUMBER = re.compile(rb":(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class FrameSource:
    """Seeded frames: :meth:`next_frame` returns ``(frame bytes, how it was made)``."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self._times: dict[tuple[str, str], int] = {}
        self._previous = b"[]"

    # -- valid elements ---------------------------------------------------------------
    def symbol(self) -> str:
        x = self.rng.random()
        if x < 0.85:
            return self.rng.choice(GOOD_SYMBOLS)
        if x < 0.95:
            letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
            sym = "".join(self.rng.choices(letters, k=self.rng.randint(1, 5)))
            return sym + self.rng.choice(("", "", ".A", ".B", ".WS", ".U", "pA", "w", "r"))
        return self.rng.choice(ODD_SYMBOLS if x < 0.98 else BAD_SYMBOLS)

    def price(self) -> int | float:
        x = self.rng.random()
        if x < 0.25:
            return self.rng.randint(1, 5000)  # Go writes 192.0 as 192
        if x < 0.3:
            return float(self.rng.randint(1, 5000))  # 192.0 on the wire
        return round(self.rng.uniform(0.0001, 5000.0), self.rng.choice((2, 3, 4, 6)))

    def size(self) -> int | float:
        return self.rng.randint(0, 100_000) if self.rng.random() < 0.9 else self.rng.random()

    def event_time(self, channel: str, sym: str) -> int:
        """Mostly increasing per key, sometimes equal or late (conflation must drop those)."""
        last = self._times.get((channel, sym), 1_746_630_000_000 + self.rng.randint(0, 10**6))
        step = self.rng.choice((0, 1, 7, 250, 1000, -1, -500))
        if channel == "AM":
            t = last - last % 60_000 + 60_000 * self.rng.choice((1, 1, 0, -1))
        else:
            t = last + step
        self._times[(channel, sym)] = max(t, last)
        return t

    def element(self) -> Any:
        x = self.rng.random()
        if x < 0.05:
            return {
                "ev": "status",
                "status": self.rng.choice(STATUSES),
                "message": self.rng.choice(("authenticated", "subscribed to: T.*", "", "é")),
            }
        if x < 0.07:
            ev = self.rng.choice(("A", "LULD", "NOI", "XQ"))
            return {"ev": ev, "T" if ev != "A" else "sym": self.symbol(), "t": 1}
        channel = CHANNELS[int(x * 1000) % 4]
        sym = self.symbol()
        t = self.event_time(channel, sym)
        r = self.rng
        if channel == "T":
            el: dict[str, Any] = {"ev": "T", "sym": sym, "i": str(r.randint(1, 10**6))}
            el.update(x=r.randint(1, 20), p=self.price(), s=self.size(), t=t)
            if r.random() < 0.5:
                el["c"] = r.sample(range(60), r.randint(0, 3))
            if r.random() < 0.5:
                el.update(q=r.randint(1, 10**7), z=r.randint(1, 3), pt=t - 5, ds="40.0")
            return el
        if channel == "Q":
            el = {"ev": "Q", "sym": sym, "bx": r.randint(1, 20), "ax": r.randint(1, 20)}
            el.update(bp=self.price(), ap=self.price(), bs=self.size(), **{"as": self.size()})
            el.update(t=t, z=r.randint(1, 3))
            if r.random() < 0.3:
                el.update(c=0, i=[604], q=r.randint(1, 10**7))
            return el
        if channel == "AM":
            el = {"ev": "AM", "sym": sym, "v": self.size(), "av": self.size()}
            el.update(op=self.price(), vw=self.price(), o=self.price(), c=self.price())
            el.update(h=self.price(), l=self.price(), a=self.price(), z=r.randint(1, 999))
            el.update(s=t, e=t + 60_000)
            return el
        ns = r.random() < 0.3  # FMV's t is documented in ns, examples carry ms
        return {"ev": "FMV", "fmv": self.price(), "sym": sym, "t": t * 1_000_000 if ns else t}

    def elements(self) -> list[Any]:
        n = self.rng.choice((1, 1, 1, 2, 3, 5, 8, 13, 20))
        if self.rng.random() < 0.01:
            n = self.rng.randint(100, 400)
        return [self.element() for _ in range(n)]

    # -- mutation ---------------------------------------------------------------------
    def junk(self, depth: int = 0) -> Any:
        r = self.rng
        x = r.random()
        if depth > 3 or x < 0.5:
            return r.choice((0, -1, 2**64, 1.5, "x", "", "é😀", True, False, None, [], {}))
        if x < 0.75:
            return [self.junk(depth + 1) for _ in range(r.randint(0, 3))]
        return {r.choice(("ev", "sym", "a", "")): self.junk(depth + 1) for _ in range(2)}

    def mutate_elements(self, els: list[Any]) -> tuple[Any, str]:
        r = self.rng
        op = r.choice(
            ("dup", "drop", "shuffle", "type", "missing", "junk_el", "junk_field", "ev", "sym",
             "nan", "top", "empty", "reorder", "bignum")
        )  # fmt: skip
        objs = [e for e in els if isinstance(e, dict)]
        target = r.choice(objs) if objs else None
        if op == "dup" and els:
            i = r.randrange(len(els))
            els[i:i] = [els[i]] * r.randint(1, 3)
        elif op == "drop" and els:
            del els[r.randrange(len(els))]
        elif op == "shuffle":
            r.shuffle(els)
        elif op == "type" and target:
            target[r.choice(list(target))] = self.junk()
        elif op == "missing" and target:
            del target[r.choice(list(target))]
        elif op == "junk_el":
            els.insert(r.randint(0, len(els)), self.junk())
        elif op == "junk_field" and target:
            target[r.choice(("zz", "nested", "c", "i"))] = self.junk()
        elif op == "ev" and target:
            target["ev"] = r.choice(("t", "", "q", "am", 1, None, ["T"], "T ", "status", "AM"))
        elif op == "sym" and target:
            target["sym"] = r.choice(BAD_SYMBOLS + ODD_SYMBOLS + (1, None, ["A"]))
        elif op == "nan" and target:
            target[r.choice(list(target))] = r.choice((math.nan, math.inf, -math.inf))
        elif op == "top":
            return r.choice(({"ev": "T"}, 1, "x", None, True, 1.5, {})), op
        elif op == "empty":
            return [], op
        elif op == "reorder" and target:
            items = list(target.items())
            r.shuffle(items)
            target.clear()
            target.update(items)
        elif op == "bignum" and target:
            target[r.choice(list(target))] = r.choice((10**30, 2**64, -(2**63) - 1, 1e308, 1e-320))
        return els, op

    def mutate_bytes(self, raw: bytes) -> tuple[bytes, str]:
        r = self.rng
        b = bytearray(raw)
        op = r.choice(
            ("flip", "set", "cut", "insert", "truncate", "splice", "number", "nest", "wrap",
             "bom", "trailing", "utf8_sym", "scalar")
        )  # fmt: skip
        i = r.randrange(len(b) + 1)
        if op == "flip" and b:
            for _ in range(r.randint(1, 3)):
                b[r.randrange(len(b))] ^= 1 << r.randrange(8)
        elif op == "set" and b:
            b[r.randrange(len(b))] = r.randrange(256)
        elif op == "cut":
            del b[i : i + r.randint(1, 8)]
        elif op == "insert":
            b[i:i] = r.choice(INSERT_TOKENS)
        elif op == "truncate":
            del b[i:]
        elif op == "splice":
            other = self._previous
            b = b[:i] + other[r.randrange(len(other) + 1) :]
        elif op == "number":
            spots = list(_NUMBER.finditer(b))
            if spots:
                m = r.choice(spots)
                b[m.start(1) : m.end(1)] = r.choice(HUGE_TOKENS)
        elif op == "nest":  # a deeply nested value inside an element
            at = b.find(b"{")
            d = r.choice(NESTING_DEPTHS)
            if at >= 0:
                b[at + 1 : at + 1] = b'"zz":' + b"[" * d + b"]" * d + b","
        elif op == "wrap":
            d = r.choice(NESTING_DEPTHS)
            b = bytearray(b"[" * d) + b + b"]" * d
        elif op == "bom":
            b[0:0] = b"\xef\xbb\xbf"
        elif op == "trailing":
            b += r.choice((b"]", b" x", b"[]", b"\x00", b"\n"))
        elif op == "utf8_sym":  # raw UTF-8 (valid or not) inside a string
            at = b.find(b'"sym":"')
            if at >= 0:
                b[at + 7 : at + 7] = r.choice((b"\xc3\xa9", b"\xf0\x9f\x98\x80", b"\xe2\x80\x83"))
        elif op == "scalar":  # a whole frame that is one bare value
            b = bytearray(r.choice(HUGE_TOKENS + (b'"x"', b"null", b"{}", b"1", b"NaN")))
        return bytes(b), op

    def next_frame(self) -> tuple[bytes, str]:
        """One frame: valid (about half), structurally mutated, or byte-mutated."""
        r = self.rng
        els = self.elements()
        x = r.random()
        label = "valid"
        value: Any = els
        if 0.5 <= x < 0.8 or x >= 0.95:
            value, label = self.mutate_elements(els)
            label = "struct:" + label
        if r.random() < 0.03:
            text = json.dumps(value, indent=r.choice((None, 1, "\t")), ensure_ascii=False)
            data = text.encode("utf-8", "surrogatepass")
            label += "+pretty"
        else:
            data = json.dumps(value, separators=(",", ":"), ensure_ascii=r.random() < 0.7).encode(
                "utf-8", "surrogatepass"
            )
        if x >= 0.8:
            data, op = self.mutate_bytes(data)
            label = ("bytes:" if label == "valid" else label + "+bytes:") + op
        if label == "valid" or r.random() < 0.1:
            self._previous = data
        return data, label


# -- the reference reading -------------------------------------------------------------


class HugeInt(str):
    """An integer literal with more digits than Python converts (4300): kept as text."""


def _parse_int(text: str) -> int | HugeInt:
    return HugeInt(text) if len(text) > 4300 else int(text)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_STRICT = json.JSONDecoder(parse_constant=_refuse_constant)
_STRICT_BIG = json.JSONDecoder(parse_constant=_refuse_constant, parse_int=_parse_int)


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any(0xD800 <= ord(ch) <= 0xDFFF for ch in value)
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    return False


def reference_load(data: bytes) -> Any:
    """The stdlib's reading of ``data``; raises ``ValueError`` when it is not JSON.

    Strict: the bytes must be UTF-8 (RFC 8259 §8.1), NaN/Infinity are refused, and a lone
    UTF-16 surrogate escape (``"\\ud800"``, which RFC 8259 §8.2 leaves unpredictable) counts
    as not JSON, as msgspec reads it. Integers too long for ``int()`` become :class:`HugeInt`.
    Nesting deeper than the recursion limit raises ``RecursionError``.
    """
    text = data.decode("utf-8")
    try:
        value = _STRICT.decode(text)
    except ValueError as exc:
        if "integer string conversion" not in str(exc):
            raise
        value = _STRICT_BIG.decode(text)
    if _SURROGATE_ESCAPE.search(data) and _has_surrogate(value):
        raise ValueError("lone UTF-16 surrogate escape")
    return value


DEEP_RECURSION_LIMIT = 20_000


def reference_read(data: bytes) -> tuple[Any, bool]:
    """:func:`reference_load`, retried under a raised recursion limit when the frame nests
    deeper than the stdlib parser allows by default (deep nesting is valid JSON; RFC 8259
    §9 lets parsers limit it). Returns ``(value, deep)``; raises ``ValueError`` when the frame
    is not JSON."""
    try:
        return reference_load(data), False
    except RecursionError:
        pass
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, DEEP_RECURSION_LIMIT))
    try:
        return reference_load(data), True
    finally:
        sys.setrecursionlimit(limit)


class _DuplicateKey(Exception):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise _DuplicateKey
    return value


def has_duplicate_keys(data: bytes) -> bool:
    """True when some object in ``data`` (valid JSON) repeats a name."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, DEEP_RECURSION_LIMIT))
    try:
        json.loads(data, object_pairs_hook=_pairs, parse_int=_parse_int)
    except _DuplicateKey:
        return True
    finally:
        sys.setrecursionlimit(limit)
    return False


@functools.lru_cache(maxsize=1 << 14)
def symbol_ok(sym: str) -> bool:
    """SPEC §2's symbol rule, written plainly."""
    return 1 <= len(sym) <= 32 and not any(
        ch.isspace() or ch in "*?[]{}:" or ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in sym
    )


def _number(value: Any) -> bool:
    t = type(value)
    return t is int or (t is float and math.isfinite(value))


EVENT, STATUS, REJECT = "event", "status", "reject"


def reference_kind(el: Any) -> str:
    """What SPEC §2 says one element is: ``event``, ``status`` or ``reject``."""
    if type(el) is not dict:
        return REJECT
    ev = el.get("ev")
    if ev == "status":
        message = el.get("message", "")
        ok = type(el.get("status")) is str and type(message) is str
        return STATUS if ok else REJECT
    fields = REQUIRED_NUMBERS.get(ev) if type(ev) is str else None
    if fields is None:
        return REJECT
    sym = el.get("sym")
    if type(sym) is not str or not symbol_ok(sym):
        return REJECT
    for name in fields:
        if not _number(el.get(name)):
            return REJECT
    if ev == "T":
        c = el.get("c")
        if c is not None and not (type(c) is list and all(type(x) is int for x in c)):
            return REJECT
    return EVENT
