"""Properties of the S3 archive policy: windows, keys, part sizing, rotation, seq."""

from __future__ import annotations

import ast
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from polygon_core import rotation
from polygon_core.rotation import (
    MAX_OBJECT_BYTES_S3,
    MAX_PART_BYTES,
    MAX_PARTS,
    MIN_PART_BYTES,
    RotationPolicy,
    SeqCounter,
    Window,
    channel_prefix,
    effective_part_size,
    marker_key,
    max_multipart_bytes,
    next_window,
    object_key,
    part_folder,
    plan_parts,
    safe_hostname,
    seq_from_key,
    window_folder,
    window_for,
)

MINUTE_MS = 60_000
DAY_MS = 86_400_000
T_2000 = 946_684_800_000  # 2000-01-01T00:00Z
T_2100 = 4_102_444_800_000  # 2100-01-01T00:00Z


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp() * 1000)


instants = st.integers(min_value=T_2000, max_value=T_2100)
window_minutes = st.integers(min_value=1, max_value=1440)
# Sizes that divide 1440 and sizes that do not (the last window of the day is short).
day_aligned_minutes = st.sampled_from([1, 5, 15, 30, 60, 90, 120, 1440])
channels = st.sampled_from(["AM", "FMV", "T", "Q"])
hostnames = st.text(min_size=1, max_size=30)

PART_RE = re.compile(r"part=(\d{8})_(\d{4})-(\d{8})_(\d{4})")
KEY_RE = re.compile(
    r"^(?:(?P<prefix>[^/].*[^/]|[^/])/)?channel=(?P<channel>AM|FMV|T|Q)/"
    r"ingest_dt=(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/hour=(?P<h>\d{2})/"
    r"part=(?P<first>\d{8}_\d{4})-(?P<last>\d{8}_\d{4})/"
    r"(?P<host>[^/\s]+)-seq=(?P<seq>\d{6,})\.ndjson$"
)


def stamp_ms(stamp: str) -> int:
    return int(datetime.strptime(stamp, "%Y%m%d_%H%M").replace(tzinfo=UTC).timestamp() * 1000)


# --- windows ---------------------------------------------------------------------


@given(instants, window_minutes)
def test_window_contains_instant_and_is_aligned(t: int, minutes: int) -> None:
    w = window_for(t, minutes)
    day_start = t - t % DAY_MS
    size = minutes * MINUTE_MS
    assert w.contains(t)
    assert (w.start_ms - day_start) % size == 0
    assert day_start <= w.start_ms < w.end_ms <= day_start + DAY_MS
    # Full length, unless cut short at midnight.
    assert w.duration_ms == size or (w.end_ms == day_start + DAY_MS and w.duration_ms < size)


@given(instants, window_minutes)
def test_every_instant_maps_to_exactly_one_window(t: int, minutes: int) -> None:
    w = window_for(t, minutes)
    assert window_for(w.start_ms, minutes) == w
    assert window_for(w.end_ms - 1, minutes) == w
    after = window_for(w.end_ms, minutes)
    before = window_for(w.start_ms - 1, minutes)
    assert after.start_ms == w.end_ms and after != w
    assert before.end_ms == w.start_ms and before != w


@given(st.integers(min_value=T_2000 // DAY_MS, max_value=T_2100 // DAY_MS), window_minutes)
def test_windows_tile_each_day_contiguously(day: int, minutes: int) -> None:
    midnight = day * DAY_MS
    w = window_for(midnight, minutes)
    assert w.start_ms == midnight
    seen = [w]
    while seen[-1].end_ms < midnight + DAY_MS:
        seen.append(next_window(seen[-1], minutes))
    # Contiguous and non-overlapping, ending exactly at the next midnight.
    for a, b in zip(seen, seen[1:], strict=False):
        assert a.end_ms == b.start_ms
        assert a < b
    assert seen[-1].end_ms == midnight + DAY_MS
    assert len(seen) == -(-1440 // minutes)
    # Across the day boundary the next window starts the next day at midnight.
    nxt = next_window(seen[-1], minutes)
    assert nxt.start_ms == midnight + DAY_MS
    assert nxt == window_for(midnight + DAY_MS, minutes)


@pytest.mark.parametrize("minutes", [0, -1, 1441, 10_000])
def test_window_minutes_out_of_range_is_rejected(minutes: int) -> None:
    with pytest.raises(ValueError):
        window_for(T_2000, minutes)
    with pytest.raises(ValueError):
        RotationPolicy.from_config(minutes, 512_000_000, 16 * 1024 * 1024)


def test_window_must_not_be_empty() -> None:
    with pytest.raises(ValueError):
        Window(10, 10)


def test_short_last_window_of_the_day() -> None:
    w = window_for(ms(2025, 5, 7, 23, 58), 7)  # 1440 = 205 * 7 + 5
    assert w == Window(ms(2025, 5, 7, 23, 55), ms(2025, 5, 8))
    assert part_folder(w) == "part=20250507_2355-20250507_2359"
    assert next_window(w, 7) == Window(ms(2025, 5, 8), ms(2025, 5, 8, 0, 7))


# --- part folder and keys --------------------------------------------------------


def test_part_folder_worked_example() -> None:
    w = window_for(ms(2025, 5, 7, 10, 17, 42), 30)
    assert w == Window(ms(2025, 5, 7, 10), ms(2025, 5, 7, 10, 30))
    assert part_folder(w) == "part=20250507_1000-20250507_1029"


def test_part_folder_window_ending_at_midnight() -> None:
    w = window_for(ms(2025, 12, 31, 23, 59, 59), 30)
    assert w.end_ms == ms(2026, 1, 1)
    assert part_folder(w) == "part=20251231_2330-20251231_2359"
    whole_day = window_for(ms(2024, 2, 29, 12), 1440)
    assert part_folder(whole_day) == "part=20240229_0000-20240229_2359"


@given(instants, day_aligned_minutes | window_minutes)
def test_part_folder_names_first_and_last_minute(t: int, minutes: int) -> None:
    w = window_for(t, minutes)
    m = PART_RE.fullmatch(part_folder(w))
    assert m is not None
    first = stamp_ms(f"{m[1]}_{m[2]}")
    last = stamp_ms(f"{m[3]}_{m[4]}")
    assert first == w.start_ms
    assert last + MINUTE_MS == w.end_ms
    assert m[1] == m[3]  # never crosses a day


def test_object_key_worked_example() -> None:
    w = window_for(ms(2025, 5, 7, 10, 5), 30)
    assert object_key("polygon/raw", "T", w, "ip-10-0-1-23", 1) == (
        "polygon/raw/channel=T/ingest_dt=2025/05/07/hour=10/"
        "part=20250507_1000-20250507_1029/ip-10-0-1-23-seq=000001.ndjson"
    )
    assert marker_key("/polygon/raw/", "T", w) == (
        "polygon/raw/channel=T/ingest_dt=2025/05/07/hour=10/"
        "part=20250507_1000-20250507_1029/uploading.marker"
    )
    assert object_key("", "Q", w, "h", 1_234_567) == (
        "channel=Q/ingest_dt=2025/05/07/hour=10/part=20250507_1000-20250507_1029/"
        "h-seq=1234567.ndjson"
    )


def test_channel_prefix() -> None:
    assert channel_prefix("polygon/raw", "AM") == "polygon/raw/channel=AM/"
    assert channel_prefix("//a/b//", "AM") == "a/b/channel=AM/"
    assert channel_prefix("", "FMV") == "channel=FMV/"
    assert channel_prefix("/", "FMV") == "channel=FMV/"
    for bad in ["", "A/M", "A M"]:
        with pytest.raises(ValueError):
            channel_prefix("p", bad)


@given(
    st.sampled_from(["", "/", "polygon/raw", "/polygon/raw/", "a", "x//"]),
    channels,
    instants,
    window_minutes,
    hostnames,
    st.integers(min_value=1, max_value=10**8),
)
def test_object_key_matches_spec_layout(
    prefix: str, channel: str, t: int, minutes: int, host: str, seq: int
) -> None:
    w = window_for(t, minutes)
    key = object_key(prefix, channel, w, host, seq)
    m = KEY_RE.fullmatch(key)
    assert m is not None, key
    assert (m["prefix"] or "") == prefix.strip("/")
    assert m["channel"] == channel
    start = datetime.fromtimestamp(w.start_ms / 1000, tz=UTC)
    assert (int(m["y"]), int(m["m"]), int(m["d"]), int(m["h"])) == (
        start.year,
        start.month,
        start.day,
        start.hour,
    )
    assert stamp_ms(m["first"]) == w.start_ms
    assert f"part={m['first']}-{m['last']}" == part_folder(w)
    assert int(m["seq"]) == seq
    assert len(m["seq"]) == max(6, len(str(seq)))
    assert m["host"] == safe_hostname(host)
    assert key == window_folder(prefix, channel, w) + f"{m['host']}-seq={m['seq']}.ndjson"
    assert marker_key(prefix, channel, w) == window_folder(prefix, channel, w) + "uploading.marker"
    assert key.startswith(channel_prefix(prefix, channel))
    assert seq_from_key(key, host) == seq


@given(channels, channels, instants, instants, st.integers(1, 10**7), st.integers(1, 10**7))
def test_object_key_is_injective(
    ch1: str, ch2: str, t1: int, t2: int, seq1: int, seq2: int
) -> None:
    w1, w2 = window_for(t1, 30), window_for(t2, 30)
    assume((ch1, w1, seq1) != (ch2, w2, seq2))
    assert object_key("p", ch1, w1, "host", seq1) != object_key("p", ch2, w2, "host", seq2)


def test_hostname_is_made_safe() -> None:
    assert safe_hostname("ip-10-0-1-23.ec2.internal") == "ip-10-0-1-23.ec2.internal"
    assert safe_hostname("a/b c\td\ne") == "a_b_c_d_e"
    with pytest.raises(ValueError):
        safe_hostname("")
    w = window_for(T_2000, 30)
    with pytest.raises(ValueError):
        object_key("p", "T", w, "h", 0)


def test_seq_from_key_rejects_other_objects() -> None:
    w = window_for(T_2000, 30)
    key = object_key("p", "T", w, "host-a", 42)
    assert seq_from_key(key, "host-a") == 42
    assert seq_from_key(key, "host") is None
    assert seq_from_key(marker_key("p", "T", w), "host-a") is None
    assert seq_from_key("p/host-a-seq=12.ndjson", "host-a") is None
    assert seq_from_key("p/host-a-seq=000000.ndjson", "host-a") is None
    assert seq_from_key("p/host-a-seq=00000x.ndjson", "host-a") is None


# --- part sizing -----------------------------------------------------------------

part_sizes = st.integers(min_value=MIN_PART_BYTES, max_value=MAX_PART_BYTES)
object_limits = st.integers(min_value=1, max_value=MAX_OBJECT_BYTES_S3)


@given(st.integers(min_value=1, max_value=MAX_PART_BYTES), object_limits)
def test_effective_part_size_respects_limits(configured: int, limit: int) -> None:
    size = effective_part_size(configured, limit)
    assert MIN_PART_BYTES <= size <= MAX_PART_BYTES
    assert size >= configured
    assert size * MAX_PARTS >= limit
    # Minimal: no smaller size satisfies all the constraints.
    assert size == configured or size == MIN_PART_BYTES or (size - 1) * MAX_PARTS < limit


def test_effective_part_size_examples() -> None:
    assert effective_part_size(16 * 1024 * 1024, 512_000_000) == 16 * 1024 * 1024
    assert effective_part_size(1, 1) == MIN_PART_BYTES
    assert effective_part_size(MIN_PART_BYTES, MAX_OBJECT_BYTES_S3) == 549_755_814


@pytest.mark.parametrize(
    ("part", "limit"),
    [
        (MAX_PART_BYTES + 1, 1),
        (MIN_PART_BYTES, MAX_OBJECT_BYTES_S3 + 1),
        (MIN_PART_BYTES, 0),
        (0, 1_000),
        (-1, 1_000),
    ],
)
def test_effective_part_size_rejects_impossible_configs(part: int, limit: int) -> None:
    with pytest.raises(ValueError):
        effective_part_size(part, limit)


@given(part_sizes, object_limits, st.data())
def test_plan_parts_obeys_s3_multipart_limits(
    configured: int, limit: int, data: st.DataObject
) -> None:
    part = effective_part_size(configured, limit)
    size = data.draw(st.integers(min_value=0, max_value=limit), label="object_size")
    parts = plan_parts(size, part)
    assert sum(parts) == size
    assert len(parts) <= MAX_PARTS
    assert all(p >= MIN_PART_BYTES for p in parts[:-1])
    assert all(0 < p <= MAX_PART_BYTES for p in parts)
    assert all(p == part for p in parts[:-1])
    assert len(parts) == -(-size // part)


def test_plan_parts_examples_and_errors() -> None:
    p = MIN_PART_BYTES
    assert plan_parts(0, p) == []
    assert plan_parts(1, p) == [1]
    assert plan_parts(p, p) == [p]
    assert plan_parts(2 * p + 3, p) == [p, p, 3]
    assert len(plan_parts(p * MAX_PARTS, p)) == MAX_PARTS
    assert max_multipart_bytes(p) == p * MAX_PARTS
    assert max_multipart_bytes(MAX_PART_BYTES) == MAX_OBJECT_BYTES_S3
    with pytest.raises(ValueError):
        plan_parts(p * MAX_PARTS + 1, p)
    with pytest.raises(ValueError):
        plan_parts(10, p - 1)
    with pytest.raises(ValueError):
        plan_parts(10, MAX_PART_BYTES + 1)
    with pytest.raises(ValueError):
        plan_parts(-1, p)


@given(part_sizes, st.lists(st.integers(min_value=1, max_value=3 * MIN_PART_BYTES), max_size=40))
def test_cutting_parts_from_a_stream_matches_plan(configured: int, writes: list[int]) -> None:
    policy = RotationPolicy.from_config(30, 10 * MAX_PART_BYTES, configured)
    buffered, uploaded = 0, []
    for n in writes:
        buffered += n
        while policy.part_ready(buffered):
            uploaded.append(policy.part_size_bytes)
            buffered -= policy.part_size_bytes
    assert buffered < policy.part_size_bytes
    if buffered:
        uploaded.append(buffered)
    assert uploaded == plan_parts(sum(writes), policy.part_size_bytes)


# --- rotation --------------------------------------------------------------------


def test_rotation_policy_requires_an_effective_part_size() -> None:
    with pytest.raises(ValueError):
        RotationPolicy(30, 512_000_000, 1024)
    with pytest.raises(ValueError):
        RotationPolicy(30, MAX_OBJECT_BYTES_S3, MIN_PART_BYTES)
    policy = RotationPolicy.from_config(30, 512_000_000, 1024)
    assert policy.part_size_bytes == MIN_PART_BYTES
    assert policy.window_for(ms(2025, 5, 7, 10, 1)) == window_for(ms(2025, 5, 7, 10, 1), 30)
    assert not policy.part_ready(MIN_PART_BYTES - 1)
    assert policy.part_ready(MIN_PART_BYTES)


def test_should_rotate_boundaries() -> None:
    policy = RotationPolicy.from_config(30, 100, MIN_PART_BYTES)
    assert not policy.should_rotate(0, 10**9)  # an empty object takes any line
    assert not policy.should_rotate(60, 40)  # exactly at the limit is fine
    assert policy.should_rotate(60, 41)
    assert policy.should_rotate(100, 1)
    with pytest.raises(ValueError):
        policy.should_rotate(-1, 1)


@given(
    st.integers(min_value=1, max_value=1_000),
    st.lists(st.integers(min_value=1, max_value=1_500), max_size=200),
)
def test_rotation_keeps_objects_within_limit(limit: int, lines: list[int]) -> None:
    policy = RotationPolicy.from_config(30, limit, MIN_PART_BYTES)
    objects: list[list[int]] = []
    current: list[int] = []
    for line in lines:
        if current and policy.should_rotate(sum(current), line):
            objects.append(current)
            current = []
        else:
            assert not current or sum(current) + line <= limit
        current.append(line)
    if current:
        objects.append(current)

    assert [n for obj in objects for n in obj] == lines  # nothing lost or reordered
    for obj in objects:
        assert obj, "never an empty object"
        assert sum(obj) <= limit or len(obj) == 1
    # Rotation is never premature: the next object's first line did not fit.
    for a, b in zip(objects, objects[1:], strict=False):
        assert sum(a) + b[0] > limit


# --- seq -------------------------------------------------------------------------


def test_seq_restarts_per_window_and_channel() -> None:
    seqs = SeqCounter()
    w1 = window_for(ms(2025, 5, 7, 10), 30)
    w2 = next_window(w1, 30)
    assert [seqs.next_seq("T", w1) for _ in range(3)] == [1, 2, 3]
    assert seqs.next_seq("Q", w1) == 1
    assert seqs.next_seq("T", w2) == 1
    assert seqs.next_seq("Q", w1) == 2
    with pytest.raises(ValueError):
        seqs.next_seq("T", w1)  # forgotten: reusing seq 1 would overwrite an object
    seqs.seed("Q", w2, 7)
    assert seqs.next_seq("Q", w2) == 8
    seqs.seed("Q", w2, 3)  # seeding never moves a counter back
    assert seqs.next_seq("Q", w2) == 9


@given(st.lists(st.tuples(channels, st.integers(min_value=0, max_value=2)), max_size=100))
def test_seq_counter_matches_model(steps: list[tuple[str, int]]) -> None:
    seqs = SeqCounter()
    window_index: dict[str, int] = {}
    model: dict[tuple[str, int], int] = {}
    for channel, advance in steps:
        idx = window_index.get(channel, 0) + advance
        window_index[channel] = idx
        w = Window(T_2000 + idx * 30 * MINUTE_MS, T_2000 + (idx + 1) * 30 * MINUTE_MS)
        model[(channel, idx)] = model.get((channel, idx), 0) + 1
        assert seqs.next_seq(channel, w) == model[(channel, idx)]
    assert len(seqs._current) <= 4  # bounded: one entry per channel


# --- purity ----------------------------------------------------------------------


def test_rotation_imports_only_the_standard_library() -> None:
    tree = ast.parse(Path(rotation.__file__).read_text(encoding="utf-8"))
    names = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    names |= {
        node.module or ""
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 0
    }
    assert names, "expected some imports"
    roots = {n.split(".")[0] for n in names}
    assert roots <= set(sys.stdlib_module_names) | {"__future__"}
    assert not roots & {"os", "time", "socket", "io", "asyncio"}
