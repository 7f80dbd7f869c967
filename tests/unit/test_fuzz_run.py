"""The fuzz run of issue 8 at CI size, its hypothesis properties, and proof the checks bite.

``bench.fuzz.run_fuzz`` is the same function ``python -m bench.fuzz --frames 1000000`` runs;
here 20,000 frames. Breaches that come from known bugs in ``src/polygon_core`` (found by this
fuzz, see ``KNOWN_BUGS``) are held in strict-xfail tests with minimal reproducers, so the
suite goes red for any other breach now and flags the xfails the day the bugs are fixed.
"""

from __future__ import annotations

import msgspec
import pytest
from bench import fuzz
from bench.fuzz import FrameChecker, FuzzReport, run_fuzz
from bench.fuzz_frames import FrameSource
from hypothesis import given
from hypothesis import strategies as st

from polygon_core.archive_lines import archive_line
from polygon_core.codec import FrameDecoder, RejectReason, decode_frame
from polygon_core.conflation import EventConflation
from polygon_core.events import Channel
from tests import strategies as s

CI_FRAMES = 20_000

KNOWN_BUGS: set[str] = set()
"""Breach kinds of src bugs the fuzz found and nobody fixed yet (each with a strict-xfail
reproducer below). The four it found first (invalid UTF-8 escaping ``decode`` as
``UnicodeDecodeError`` or yielding events, a line break splitting an archive line, a
frame-level ``non_finite``) are fixed; their reproducers are ordinary tests now."""


def unexpected(report: FuzzReport) -> dict[str, int]:
    return {kind: n for kind, n in report.breaches.items() if kind not in KNOWN_BUGS}


def examples(report: FuzzReport) -> str:
    return "\n".join(
        f"[{b.kind}] {b.label} {b.frame[:200]!r}\n  {b.detail[-300:]}"
        for b in report.examples
        if b.kind not in KNOWN_BUGS
    )


@pytest.fixture(scope="module")
def ci_report() -> FuzzReport:
    return run_fuzz(CI_FRAMES, seed=8)


def test_fuzz_run_accounts_for_every_element(ci_report: FuzzReport) -> None:
    report = ci_report
    assert report.frames == CI_FRAMES
    assert unexpected(report) == {}, examples(report)
    # the run really covered what it claims to (a generator gone quiet would pass vacuously)
    assert 0.3 < report.mutated_frames / report.frames < 0.7
    assert report.elements > 5 * CI_FRAMES
    assert all(report.events[c] > 1000 for c in ("AM", "FMV", "T", "Q"))
    assert report.statuses > 100
    assert all(report.rejects[r.value] > 0 for r in RejectReason), report.rejects
    assert report.records > 0.95 * sum(report.events.values())  # all but unreadable frames'
    assert report.archive_lines > report.records
    assert report.conflation["late_dropped"] > 0 and report.conflation["requeued"] > 0
    assert report.unreadable_frames > 100


def test_fuzz_run_has_no_breach_at_all(ci_report: FuzzReport) -> None:
    assert dict(ci_report.breaches) == {}


@pytest.mark.parametrize(
    "frame",
    [
        b'[{"ev":"\xe9"}]',
        b'[{"ev":"T","sym":"\xe9","p":1,"s":1,"t":1}]',
        b'[{"ev":"status","status":"\xe9"}]',
    ],
)
def test_invalid_utf8_in_a_decoded_string_is_a_reject(frame: bytes) -> None:
    decoded = decode_frame(frame, keep_raw=True)
    assert decoded.element_count == 1 and decoded.rejects[0].reason is RejectReason.INVALID_JSON


def test_a_frame_with_invalid_utf8_is_one_frame_level_reject() -> None:
    frame = b'[{"ev":"T","sym":"A","p":1,"s":1,"t":1,"x":"\xff"}]'
    decoded = decode_frame(frame, keep_raw=True)
    assert decoded.events == [] and [r.reason for r in decoded.rejects] == ["invalid_json"]


def test_archive_line_is_one_line_for_a_pretty_printed_element() -> None:
    frame = b'[{\n "ev": "T",\n "sym": "A",\n "p": 1,\n "s": 1,\n "t": 1\n}]'
    ((channel, symbol, raw),) = decode_frame(frame, keep_raw=True).archive
    assert archive_line(channel, symbol, b"2025-05-07T15:04:05.123Z", raw).count(b"\n") == 1


@pytest.mark.parametrize("frame", [b"1e310", b"1e999[]"])
def test_a_frame_starting_with_a_huge_number_is_a_frame_level_reject(frame: bytes) -> None:
    (reject,) = decode_frame(frame).rejects
    assert reject.reason in (RejectReason.NOT_ARRAY, RejectReason.INVALID_JSON)


# -- hypothesis properties: the same checks on hypothesis-made frames -------------------

checker = FrameChecker(FuzzReport())


def check(data: bytes) -> None:
    before = dict(checker.report.breaches)
    checker.report.examples.clear()
    checker.frame(data, "hypothesis", as_type=len(data) % 4)
    new = {k: n - before.get(k, 0) for k, n in checker.report.breaches.items()}
    new = {k: n for k, n in new.items() if n and k not in KNOWN_BUGS}
    assert new == {}, examples(checker.report)


@given(s.frames)
def test_hypothesis_frames_pass_every_check(elements: list) -> None:
    check(s.dumps(elements))


@given(s.frames, st.data())
def test_hypothesis_mutated_frames_pass_every_check(elements: list, data: st.DataObject) -> None:
    source = FrameSource(data.draw(st.integers(0, 2**32)))
    value, _ = source.mutate_elements(list(elements))
    raw = s.dumps(value)
    for _ in range(data.draw(st.integers(0, 3))):
        raw, _ = source.mutate_bytes(raw)
    check(raw)


@given(st.binary(max_size=200))
def test_hypothesis_arbitrary_bytes_pass_every_check(data: bytes) -> None:
    check(data)


@given(st.lists(st.tuples(st.sampled_from(["AAPL", "BRK.B", "X"]), st.integers(0, 5)), max_size=40))
def test_hypothesis_event_times_never_roll_a_key_back(times: list) -> None:
    frame = [{"ev": "T", "sym": sym, "p": 1, "s": 1, "t": t} for sym, t in times]
    check(s.dumps(frame))


# -- the checks can fail: each stage broken on purpose must be caught --------------------


class DroppingDecoder(FrameDecoder):
    """Loses the last reject of a frame: the accounting must notice."""

    def decode(self, data, *, keep_raw=False):
        frame = super().decode(data, keep_raw=keep_raw)
        if frame.rejects:
            frame.rejects.pop()
        return frame


class RollingBackConflation(EventConflation):
    """Takes every event, older ones included."""

    def offer_events(self, events):
        for event in events:
            self._state.pop(fuzz.KEY_PREFIXES[event.channel] + event.symbol, None)
        super().offer_events(events)


def small_run(frames: int = 2000) -> FuzzReport:
    return run_fuzz(frames, seed=3)


def test_a_decoder_losing_rejects_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fuzz, "FrameDecoder", DroppingDecoder)
    assert small_run().accounting_mismatches > 0


def test_a_conflation_rolling_back_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fuzz, "EventConflation", RollingBackConflation)
    breaches = small_run().breaches
    assert breaches["conflation:late"] > 0 and breaches["conflation:rollback"] > 0


def test_a_mapper_reordering_fields_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    real = fuzz.encode_record

    def reordered(event, updated_at):
        record = msgspec.json.decode(real(event, updated_at))
        return msgspec.json.encode(dict(reversed(list(record.items()))))

    monkeypatch.setattr(fuzz, "encode_record", reordered)
    assert small_run(500).breaches["mapping:field_order"] > 0


def test_an_archive_line_losing_a_byte_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    real = fuzz.archive_line

    def lossy(channel: Channel, symbol, ingest_ts: bytes, raw):
        line = real(channel, symbol, ingest_ts, raw)
        return line[:-3] + line[-2:]

    monkeypatch.setattr(fuzz, "archive_line", lossy)
    assert small_run(500).breaches["archive:bytes"] > 0
