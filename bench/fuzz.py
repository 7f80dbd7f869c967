"""``python -m bench.fuzz --frames 1000000 --seed 1``: the fuzz run of issue 8.

Pushes seeded generated and mutated frames (see :mod:`bench.fuzz_frames`) through the pure
core: ``FrameDecoder.decode`` with and without ``keep_raw`` and ``decode_frame``; the
mappers (``encode_record``, ``to_latest_value``) and the key schema; ``EventConflation``
with drains and requeues of failed batches; and ``archive_line``. Each frame is checked
against an independent reading (stdlib ``json``, SPEC §2's rules written plainly):

* no exception escapes any stage;
* accounting: events + statuses + rejects equal the reference's top-level element count,
  and a frame the reference cannot read (or that is not an array) is exactly one reject;
  the three decodes agree, and each element is the kind (event/status/reject) SPEC §2 says;
* each event's record has SPEC §2's fields in order with the wire's values and number types,
  and its key and TTL are the schema's;
* every AM/FMV/T/Q element is archived; each archive line is one line of valid JSON whose
  tail is the element's bytes and whose fields are the element's, and ``archive_blocks``'s
  per-channel blocks equal those lines joined;
* conflation never lets an older event time replace a newer one, drains the newest (latest
  arrival on ties) per key, and requeues exactly what a model says.

Prints a table (or ``--json``) and exits 1 on any breach; the first reproducers of each
kind are printed (and all kept ones written with ``--breaches FILE``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.fuzz_frames import (
    CHANNELS,
    EVENT,
    REJECT,
    STATUS,
    FrameSource,
    has_duplicate_keys,
    reference_kind,
    reference_load,
    reference_read,
    symbol_ok,
)
from polygon_core import archive_lines, codec, conflation, keys, mappers
from polygon_core.archive_lines import archive_blocks, archive_line
from polygon_core.codec import DecodedFrame, FrameDecoder, RejectReason, decode_frame
from polygon_core.conflation import EventConflation
from polygon_core.events import Channel, event_time
from polygon_core.keys import KEY_PREFIXES, TtlPolicy, is_valid_symbol, key_for
from polygon_core.mappers import encode_record, to_latest_value

UPDATED_AT = "2025-05-07T15:04:05.000Z"
INGEST_TS = b"2025-05-07T15:04:05.123Z"
TTL = TtlPolicy(agg1m_s=120, fmv_s=61, trade_s=62, quote_s=63)
RECORD_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "AM": (("symbol", "sym"), ("start", "s"), ("end", "e"), ("open", "o"), ("high", "h"),
           ("low", "l"), ("close", "c"), ("volume", "v"), ("vwap", "vw"), ("updatedAt", "")),
    "FMV": (("symbol", "sym"), ("price", "fmv"), ("ts", "t"), ("updatedAt", "")),
    "T": (("symbol", "sym"), ("price", "p"), ("ts", "t"), ("size", "s"), ("conditions", "c"),
          ("updatedAt", "")),
    "Q": (("symbol", "sym"), ("bid", "bp"), ("bidSize", "bs"), ("ask", "ap"), ("askSize", "as"),
          ("ts", "t"), ("updatedAt", "")),
}  # fmt: skip
"""SPEC §2: record field -> wire field, in the record's order."""
FRAME_LEVEL = {RejectReason.INVALID_JSON, RejectReason.NOT_ARRAY}
KEEP_PER_KIND = 20
CONFLATION_KEY_LIMIT = 50_000


_BREAKS_TO_SPACES = bytes.maketrans(b"\r\n", b"  ")


@dataclass
class Breach:
    kind: str
    stage: str
    detail: str
    frame: bytes
    label: str


@dataclass
class FuzzReport:
    frames: int = 0
    mutated_frames: int = 0
    elements: int = 0
    """Top-level elements by the reference (a frame it cannot read, or a non-array, is one)."""
    unreadable_frames: int = 0
    events: Counter[str] = field(default_factory=Counter)
    statuses: int = 0
    rejects: Counter[str] = field(default_factory=Counter)
    records: int = 0
    archive_lines: int = 0
    conflation: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    """Frames whose element checks were skipped, and why (deep nesting, duplicate keys)."""
    breaches: Counter[str] = field(default_factory=Counter)
    examples: list[Breach] = field(default_factory=list)
    elapsed_s: float = 0.0
    core_digest: str = ""
    """sha256 (12 hex) of the core modules as imported: which code this run checked."""

    def count(self, prefix: str) -> int:
        return sum(n for kind, n in self.breaches.items() if kind.startswith(prefix))

    @property
    def exceptions(self) -> int:
        return self.count("exception")

    @property
    def accounting_mismatches(self) -> int:
        return self.count("accounting")

    @property
    def other_breaches(self) -> int:
        return self.total_breaches - self.exceptions - self.accounting_mismatches

    @property
    def total_breaches(self) -> int:
        return sum(self.breaches.values())


class FrameChecker:
    """Checks frames one by one (:meth:`frame`), keeping decoders, the conflation and its
    model, and the report across frames."""

    def __init__(self, report: FuzzReport) -> None:
        self.report = report
        self.plain = FrameDecoder()
        self.keeping = FrameDecoder()
        self._reset_conflation()

    def _reset_conflation(self) -> None:
        """A fresh buffer and model (bounds memory: the buffer remembers every key)."""
        self.conflation = EventConflation()
        self.failed_batch: list[tuple[str, Any, Any]] | None = None
        self.newest: dict[str, Any] = {}  # key -> [time, event] of the newest accepted
        self.written: dict[str, Any] = {}  # key -> time of the last successful drain
        self.pending: set[str] = set()

    def breach(self, kind: str, stage: str, detail: str, frame: bytes, label: str) -> None:
        report = self.report
        report.breaches[kind] += 1
        if report.breaches[kind] <= KEEP_PER_KIND:
            report.examples.append(Breach(kind, stage, detail, frame, label))

    def stage(self, name: str, frame: bytes, label: str, fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except Exception as exc:  # the point of the fuzz: record it and keep going
            kind = f"exception:{name}:{type(exc).__name__}"
            self.breach(kind, name, traceback.format_exc(), frame, label)
            return None

    # -- one frame --------------------------------------------------------------------
    def frame(self, data: bytes, label: str = "given", as_type: int = 0) -> None:
        """Run one frame through every stage and check it; ``as_type`` 1/2/3 feeds the
        decoders a memoryview, bytearray or str."""
        report = self.report
        report.frames += 1
        report.mutated_frames += label != "valid"
        feed: Any = data
        if as_type == 1:
            feed = memoryview(data)
        elif as_type == 2:
            feed = bytearray(data)
        elif as_type == 3 and _is_utf8(data):
            feed = data.decode()
        plain = self.stage("decode", data, label, self.plain.decode, feed, keep_raw=False)
        kept = self.stage("decode_keep_raw", data, label, self.keeping.decode, feed, keep_raw=True)
        shared = self.stage("decode_frame", data, label, decode_frame, data)
        if plain is None or kept is None or shared is None:
            return
        self.agree(data, label, kept, plain, shared)
        try:
            ref, deep = reference_read(data)
            readable = True
        except ValueError:
            ref, deep, readable = None, False, False
        if not readable or type(ref) is not list:
            report.elements += 1
            report.unreadable_frames += not readable
            self.tally(kept)
            allowed = FRAME_LEVEL if not readable else {RejectReason.NOT_ARRAY}
            if kept.events or kept.statuses or len(kept.rejects) != 1:
                why = "frame not JSON" if readable is False else "not an array"
                utf8 = _is_utf8(data)
                kind = "accounting:frame_level" if utf8 else "accounting:invalid_utf8_accepted"
                self.breach(kind, "decode", f"{why}, yet {_summary(kept)}", data, label)
            elif kept.rejects[0].reason not in allowed:
                kind = "accounting:reason" if _is_utf8(data) else "accounting:invalid_utf8_accepted"
                if kept.rejects[0].reason is RejectReason.NON_FINITE:
                    kind = "accounting:frame_reason_non_finite"
                self.breach(kind, "decode", f"{kept.rejects[0]}", data, label)
            self.stage("unreadable", data, label, self.unreadable, kept, data, label)
            self.stage("archive_blocks", data, label, self.blocks, kept, data, label)
            return
        report.elements += len(ref)
        self.tally(kept)
        if deep and _depth_limited(kept):
            # RFC 8259 §9 lets a parser limit nesting: msgspec refuses the frame past ~1000
            report.skipped["depth_limited_frames"] += 1
            return
        if kept.element_count != len(ref) or _count(kept) != len(ref):
            self.breach(
                "accounting:count", "decode", f"{len(ref)} elements, {_summary(kept)}", data, label
            )
        if deep:  # past msgspec's depth limit (~1000) an element is a reject: counts only
            report.skipped["deep_frames"] += 1
            return
        kinds = [reference_kind(el) for el in ref]
        expected = (kinds.count(EVENT), kinds.count(STATUS), kinds.count(REJECT))
        if expected != (len(kept.events), len(kept.statuses), len(kept.rejects)):
            if has_duplicate_keys(data):  # RFC 8259 §4: unpredictable; msgspec is stricter
                report.skipped["duplicate_key_frames"] += 1
                return
            detail = f"reference {expected}, decoder {_summary(kept)}"
            self.breach("classification", "decode", detail, data, label)
            return
        wire_events = [el for el, kind in zip(ref, kinds, strict=True) if kind == EVENT]
        for event, wire in zip(kept.events, wire_events, strict=True):
            self.stage("mapping", data, label, self.mapping, event, wire, data, label)
        self.stage("archive", data, label, self.archive, kept, ref, data, label)
        self.stage("archive_blocks", data, label, self.blocks, kept, data, label)
        self.stage("conflation", data, label, self.conflate, kept.events, data, label)

    def unreadable(self, frame: DecodedFrame, data: bytes, label: str) -> None:
        """Whatever the decoder made of a frame that is not JSON must still map and archive
        cleanly (no exception, one valid JSON line per archived element)."""
        for event in frame.events:
            to_latest_value(event, UPDATED_AT, TTL)
        self.conflate(frame.events, data, label)
        for channel, symbol, raw in frame.archive:
            line = archive_line(channel, symbol, INGEST_TS, raw)
            self.report.archive_lines += 1
            try:
                reference_load(line)
            except ValueError as exc:
                kind = "archive:invalid_utf8" if not _is_utf8(line) else "archive:invalid_json"
                self.breach(kind, "archive_line", f"{exc}: {line[:200]!r}", data, label)

    def agree(self, data: bytes, label: str, kept: DecodedFrame, *others: DecodedFrame) -> None:
        reasons = [r.reason for r in kept.rejects]
        for other in others:
            if (
                other.events != kept.events
                or other.statuses != kept.statuses
                or [r.reason for r in other.rejects] != reasons
            ):
                detail = f"keep_raw=True {_summary(kept)} vs {_summary(other)}"
                self.breach("decoders_disagree", "decode", detail, data, label)
        if others[0].archive:
            self.breach("archive:without_keep_raw", "decode", "archive filled", data, label)

    def tally(self, frame: DecodedFrame) -> None:
        report = self.report
        for event in frame.events:
            report.events[event.channel.value] += 1
        report.statuses += len(frame.statuses)
        for reject in frame.rejects:
            report.rejects[reject.reason.value] += 1

    # -- mapping ----------------------------------------------------------------------
    def mapping(self, event: Any, wire: dict[str, Any], data: bytes, label: str) -> None:
        channel = event.channel
        if channel.value != wire["ev"] or event.symbol != wire["sym"]:
            self.breach("mapping:event", "decode", f"{event!r} vs {wire!r}", data, label)
            return
        record = encode_record(event, UPDATED_AT)
        self.report.records += 1
        parsed = json.loads(record)
        spec = RECORD_FIELDS[channel.value]
        if list(parsed) != [name for name, _ in spec]:
            self.breach("mapping:field_order", "encode_record", record.decode(), data, label)
        for name, wire_name in spec:
            got = parsed.get(name)
            if not wire_name:
                want: Any = UPDATED_AT
            elif name == "conditions":
                want = [] if wire.get("c") is None else wire["c"]
            else:
                want = wire[wire_name]
            if got != want or type(got) is not type(want):
                detail = f"{name}: record {got!r} ({type(got).__name__}), wire {want!r}"
                self.breach("mapping:value", "encode_record", detail, data, label)
        value = to_latest_value(event, UPDATED_AT, TTL)
        key = key_for(channel, event.symbol)
        if (value.key, value.value, value.ttl_s) != (key, record, TTL.for_channel(channel)):
            self.breach("mapping:latest_value", "to_latest_value", repr(value), data, label)
        if key != KEY_PREFIXES[channel] + wire["sym"]:
            self.breach("mapping:key", "key_for", key, data, label)

    # -- archive ----------------------------------------------------------------------
    def archive(self, frame: DecodedFrame, ref: list[Any], data: bytes, label: str) -> None:
        wanted = [
            el
            for el in ref
            if type(el) is dict and type(el.get("ev")) is str and el["ev"] in CHANNELS
        ]
        if len(frame.archive) != len(wanted):
            detail = f"{len(wanted)} AM/FMV/T/Q elements, {len(frame.archive)} archived"
            self.breach("archive:count", "decode", detail, data, label)
            return
        for (channel, symbol, raw), element in zip(frame.archive, wanted, strict=True):
            sym = element.get("sym")
            if channel.value != element["ev"] or symbol != (sym if type(sym) is str else None):
                detail = f"entry {channel}/{symbol!r} for {element!r}"
                self.breach("archive:entry", "decode", detail, data, label)
            if isinstance(symbol, str) and (is_valid_symbol(symbol) != symbol_ok(symbol)):
                self.breach("keys:is_valid_symbol", "keys", repr(symbol), data, label)
            body = bytes(raw)
            if reference_load(body) != element:
                self.breach("archive:raw", "decode", repr(body[:200]), data, label)
            line = archive_line(channel, symbol, INGEST_TS, raw)
            self.report.archive_lines += 1
            self.check_line(line, channel, symbol, body, element, data, label)

    def blocks(self, frame: DecodedFrame, data: bytes, label: str) -> None:
        """``archive_blocks``: the frame's lines joined per channel must equal its
        :func:`archive_line` lines, byte for byte."""
        lines: dict[Channel, list[bytes]] = {}
        for channel, symbol, raw in frame.archive:
            lines.setdefault(channel, []).append(archive_line(channel, symbol, INGEST_TS, raw))
        expected = [(c, b"".join(group), len(group)) for c, group in lines.items()]
        got = archive_blocks(frame, INGEST_TS)
        if got != expected:
            detail = f"blocks {got!r:.300} vs lines {expected!r:.300}"
            self.breach("archive:blocks", "archive_blocks", detail, data, label)

    def check_line(
        self,
        line: bytes,
        channel: Channel,
        symbol: str | None,
        body: bytes,
        element: dict[str, Any],
        data: bytes,
        label: str,
    ) -> None:
        if not line.endswith(b"\n") or line.count(b"\n") != 1:
            newlines = line.count(b"\n")
            detail = f"{newlines} newlines in {line[:200]!r}"
            self.breach("archive:multiline", "archive_line", detail, data, label)
        # The symbol's own encoding is free (escaped or raw UTF-8); the fields check reads it.
        prefix = b'{"channel":"%s","symbol":' % channel.value.encode()
        # Line breaks between tokens become spaces (a raw break cannot sit in a JSON string).
        rest = body[1:].translate(_BREAKS_TO_SPACES).lstrip(b" \t")
        tail = b'"ingestTs":"%s"' % INGEST_TS + (rest if rest.startswith(b"}") else b"," + rest)
        if not (line.startswith(prefix) and line[:-1].endswith(tail)):
            detail = f"line {line[:200]!r} for element {body[:200]!r}"
            self.breach("archive:bytes", "archive_line", detail, data, label)
        try:
            parsed = reference_load(line)
        except (ValueError, RecursionError) as exc:
            kind = "archive:invalid_utf8" if not _is_utf8(line) else "archive:invalid_json"
            self.breach(kind, "archive_line", f"{exc}: {line[:200]!r}", data, label)
            return
        expected = {"channel": channel.value, "symbol": symbol, "ingestTs": INGEST_TS.decode()}
        expected.update(element)
        if parsed != expected or list(parsed)[:3] != ["channel", "symbol", "ingestTs"]:
            self.breach("archive:fields", "archive_line", repr(line[:200]), data, label)

    # -- conflation -------------------------------------------------------------------
    def conflate(self, events: list[Any], data: bytes, label: str) -> None:
        buffer, newest, stats = self.conflation, self.newest, self.report.conflation
        late_before = buffer.late_dropped
        late = 0
        for event in events:
            key = KEY_PREFIXES[event.channel] + event.symbol
            t = event_time(event)
            current = newest.get(key)
            if current is not None and t < current[0]:
                late += 1
                continue
            newest[key] = [t, event]
            self.pending.add(key)
        buffer.offer_events(events)
        stats["offered"] += len(events)
        stats["late_dropped"] += late
        if buffer.late_dropped - late_before != late:
            detail = f"late {buffer.late_dropped - late_before}, model {late}"
            self.breach("conflation:late", "offer_events", detail, data, label)
        for event in events:
            key = KEY_PREFIXES[event.channel] + event.symbol
            if buffer.newest_time(key) != newest[key][0]:
                detail = f"{key}: {buffer.newest_time(key)!r}, model {newest[key][0]!r}"
                self.breach("conflation:newest", "offer_events", detail, data, label)
        if len(buffer) != len(self.pending):
            detail = f"{len(buffer)} pending, model {len(self.pending)}"
            self.breach("conflation:pending", "offer_events", detail, data, label)
        if self.failed_batch is not None:
            self.requeue(self.failed_batch, data, label)
            self.failed_batch = None
        rng_bits = self.report.frames * 2654435761 & 0xFF
        if rng_bits < 48:
            self.drain(failed=rng_bits < 8, data=data, label=label)
        if buffer.known_keys > CONFLATION_KEY_LIMIT:
            self._reset_conflation()

    def drain(self, failed: bool, data: bytes, label: str) -> None:
        batch = self.conflation.drain()
        stats = self.report.conflation
        stats["drained"] += len(batch)
        keys = [key for key, _, _ in batch]
        if len(set(keys)) != len(keys) or set(keys) != self.pending:
            self.breach("conflation:drain_keys", "drain", f"{len(keys)} keys", data, label)
        self.pending = set()
        for key, t, item in batch:
            model_t, model_item = self.newest[key]
            if t != model_t or item is not model_item:
                detail = f"{key}: drained {t!r}/{item!r}, newest {model_t!r}/{model_item!r}"
                self.breach("conflation:not_newest", "drain", detail, data, label)
            if not failed:
                written = self.written.get(key)
                if written is not None and t < written:
                    detail = f"{key}: wrote {t!r} after {written!r}"
                    self.breach("conflation:rollback", "drain", detail, data, label)
                self.written[key] = t
        if failed:
            self.failed_batch = batch

    def requeue(self, batch: list[tuple[str, Any, Any]], data: bytes, label: str) -> None:
        expected = 0
        for key, t, item in batch:
            if key not in self.pending and self.newest[key][1] is item and self.newest[key][0] == t:
                expected += 1
                self.pending.add(key)
        restored = self.conflation.requeue(batch)
        self.report.conflation["requeued"] += restored
        if restored != expected or len(self.conflation) != len(self.pending):
            detail = f"restored {restored}, model {expected}"
            self.breach("conflation:requeue", "requeue", detail, data, label)


def _core_digest() -> str:
    digest = hashlib.sha256()
    for module in (codec, archive_lines, conflation, keys, mappers):
        digest.update(Path(str(module.__file__)).read_bytes())
    return digest.hexdigest()[:12]


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _depth_limited(frame: DecodedFrame) -> bool:
    return (
        not frame.events
        and not frame.statuses
        and len(frame.rejects) == 1
        and frame.rejects[0].reason is RejectReason.INVALID_JSON
        and "recursion" in frame.rejects[0].detail
    )


def _count(frame: DecodedFrame) -> int:
    return len(frame.events) + len(frame.statuses) + len(frame.rejects)


def _summary(frame: DecodedFrame) -> str:
    reasons = ",".join(r.reason.value for r in frame.rejects[:5])
    return f"{len(frame.events)} events, {len(frame.statuses)} statuses, rejects [{reasons}]"


def run_fuzz(frames: int, seed: int, progress_every: int = 0) -> FuzzReport:
    """Fuzz ``frames`` frames from ``seed``; never raises for a breach, reports it."""
    report = FuzzReport(core_digest=_core_digest())
    source = FrameSource(seed)
    run = FrameChecker(report)
    start = time.perf_counter()
    for n in range(frames):
        data, label = source.next_frame()
        run.frame(data, label, n % 7 if n % 7 < 4 else 0)
        if progress_every and (n + 1) % progress_every == 0:
            rate = (n + 1) / (time.perf_counter() - start)
            print(f"  {n + 1:>9,} frames, {rate:,.0f}/s, breaches {report.total_breaches}",
                  file=sys.stderr)  # fmt: skip
    report.elapsed_s = time.perf_counter() - start
    return report


def to_json(report: FuzzReport) -> dict[str, Any]:
    return {
        "frames": report.frames,
        "mutated_frames": report.mutated_frames,
        "elements": report.elements,
        "unreadable_frames": report.unreadable_frames,
        "events": {c: report.events[c] for c in CHANNELS},
        "statuses": report.statuses,
        "rejects": {r.value: report.rejects[r.value] for r in RejectReason},
        "records": report.records,
        "archive_lines": report.archive_lines,
        "conflation": dict(report.conflation),
        "checks_skipped": dict(report.skipped),
        "exceptions": report.exceptions,
        "accounting_mismatches": report.accounting_mismatches,
        "breaches": dict(report.breaches),
        "elapsed_s": round(report.elapsed_s, 2),
        "core_digest": report.core_digest,
        "frames_per_s": round(report.frames / report.elapsed_s) if report.elapsed_s else 0,
        "examples": [
            {"kind": b.kind, "stage": b.stage, "label": b.label, "detail": b.detail,
             "frame": b.frame.decode("latin-1")}
            for b in report.examples
        ],
    }  # fmt: skip


def render(report: FuzzReport) -> str:
    rows: list[tuple[str, str]] = [
        ("frames", f"{report.frames:,}"),
        ("  mutated", f"{report.mutated_frames:,}"),
        ("  not JSON (reference)", f"{report.unreadable_frames:,}"),
        ("elements (reference)", f"{report.elements:,}"),
    ]
    rows += [(f"events {c}", f"{report.events[c]:,}") for c in CHANNELS]
    rows.append(("statuses", f"{report.statuses:,}"))
    rows += [(f"rejects {r.value}", f"{report.rejects[r.value]:,}") for r in RejectReason]
    rows += [
        ("records mapped", f"{report.records:,}"),
        ("archive lines", f"{report.archive_lines:,}"),
    ]
    rows += [(f"conflation {k}", f"{n:,}") for k, n in sorted(report.conflation.items())]
    rows += [(f"element checks skipped: {k}", f"{n:,}") for k, n in sorted(report.skipped.items())]
    rows += [
        ("exceptions (must be 0)", f"{report.exceptions:,}"),
        ("accounting mismatches (must be 0)", f"{report.accounting_mismatches:,}"),
        ("other breaches (must be 0)", f"{report.other_breaches:,}"),
        ("elapsed s", f"{report.elapsed_s:.1f}"),
        ("frames/s", f"{report.frames / report.elapsed_s:,.0f}" if report.elapsed_s else "-"),
        ("core sha256 (codec, archive_lines, conflation, keys, mappers)", report.core_digest),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value:>12}" for name, value in rows]
    if report.breaches:
        lines.append("")
        lines.append("breaches by kind:")
        lines += [f"  {kind}: {n:,}" for kind, n in sorted(report.breaches.items())]
        lines.append("")
        lines.append("first reproducer of each kind:")
        seen: set[str] = set()
        for b in report.examples:
            if b.kind in seen:
                continue
            seen.add(b.kind)
            lines.append(f"  [{b.kind}] stage={b.stage} made={b.label}")
            lines.append(f"    frame={b.frame[:300]!r}{' ...' if len(b.frame) > 300 else ''}")
            lines += ["    " + text for text in b.detail.rstrip().splitlines()[-6:]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.split("\n\n")[1])
    p.add_argument("--frames", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--breaches", metavar="FILE", help="write the kept reproducers as JSON lines")
    p.add_argument("--progress", type=int, default=0, metavar="N", help="a line every N frames")
    args = p.parse_args(argv)
    report = run_fuzz(args.frames, args.seed, args.progress)
    out = to_json(report)
    if args.breaches:
        with open(args.breaches, "w", encoding="utf-8") as f:
            for example in out["examples"]:
                f.write(json.dumps(example) + "\n")
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(render(report))
    return 1 if report.total_breaches else 0


if __name__ == "__main__":
    sys.exit(main())
