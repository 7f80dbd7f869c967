"""Replay's reading plan: archive keys read back, the time range, the order of objects."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polygon_core.events import Channel
from polygon_core.rotation import marker_key, object_key, window_for
from polygon_core.subscriptions import FeedRole
from polygon_sim.replay_layout import (
    ArchiveObject,
    TimeRange,
    parse_object_key,
    parse_time_ms,
    plan_reads,
)

T0 = 1_746_626_400_000  # 2025-05-07T14:00:00Z
MIN = 60_000


@given(
    ingest_ms=st.integers(0, 4_000_000_000_000),
    minutes=st.sampled_from([1, 5, 7, 30, 60, 1440]),
    channel=st.sampled_from(list(Channel)),
    prefix=st.sampled_from(["", "polygon/raw", "/a/b/"]),
    host=st.sampled_from(["ip-10-0-1-23", "h", "seq=1-x"]),
    seq=st.integers(1, 2_000_000),
)
def test_a_key_reads_back_as_written(ingest_ms, minutes, channel, prefix, host, seq) -> None:
    window = window_for(ingest_ms, minutes)
    key = object_key(prefix, channel.value, window, host, seq)
    for name in (key, key + ".gz", "/downloads/" + key):
        obj = parse_object_key(name, 7)
        assert obj == ArchiveObject(name, channel, window.start_ms, window.end_ms, host, seq, 7)


def test_markers_and_other_files_are_not_read() -> None:
    window = window_for(T0, 30)
    assert parse_object_key(marker_key("p", "T", window)) is None
    assert parse_object_key("p/channel=T/readme.txt") is None


def test_a_file_outside_the_layout_is_read_with_everything() -> None:
    obj = parse_object_key("incident/trades.ndjson")
    assert obj is not None and obj.channel is None
    assert obj.start_ms == 0 and obj.end_ms > 4_000_000_000_000
    bad_month = (
        "channel=T/ingest_dt=2025/13/07/hour=14/part=20251307_1400-20251307_1429/"
        "h-seq=000001.ndjson"
    )
    assert parse_object_key(bad_month).channel is None  # type: ignore[union-attr]


def test_times_parse_as_utc_unless_told() -> None:
    assert parse_time_ms("2025-05-07T14:00") == T0
    assert parse_time_ms("2025-05-07T14:00:00.250Z") == T0 + 250
    assert parse_time_ms("2025-05-07T16:00+02:00") == T0
    assert parse_time_ms("2025-05-07") == T0 - 14 * 60 * MIN
    assert parse_time_ms(str(T0)) == T0
    with pytest.raises(ValueError, match="not a time"):
        parse_time_ms("yesterday")


def test_the_range_is_half_open() -> None:
    r = TimeRange(T0, T0 + MIN)
    assert [r.contains(t) for t in (T0 - 1, T0, T0 + MIN - 1, T0 + MIN)] == [0, 1, 1, 0]
    assert r.overlaps(T0 - MIN, T0 + 1) and not r.overlaps(T0 - MIN, T0)
    assert not r.overlaps(T0 + MIN, T0 + 2 * MIN)
    assert TimeRange().contains(0) and TimeRange(None, T0).contains(0)
    with pytest.raises(ValueError):
        TimeRange(T0, T0)


def obj(channel: Channel | None, start_min: int, minutes: int = 30, writer="h", seq=1):
    start = T0 + start_min * MIN
    name = f"{channel}-{start_min}-{writer}-{seq}"
    return ArchiveObject(name, channel, start, start + minutes * MIN, writer, seq)


def names(plan, role):
    return [[[o.name for o in chain.objects] for chain in group] for group in plan[role]]


def test_chains_follow_seq_and_groups_follow_windows() -> None:
    objects = [
        obj(Channel.T, 30, seq=2),
        obj(Channel.T, 0, seq=2),
        obj(Channel.Q, 0),
        obj(Channel.T, 0, seq=1),
        obj(Channel.AM, 0),
        obj(Channel.T, 30, seq=1),
        obj(Channel.T, 0, writer="other"),
    ]
    plan = plan_reads(objects)
    assert names(plan, FeedRole.DELAYED) == [
        [["Q-0-h-1"], ["T-0-h-1", "T-0-h-2"], ["T-0-other-1"]],
        [["T-30-h-1", "T-30-h-2"]],
    ]
    assert names(plan, FeedRole.REALTIME) == [[["AM-0-h-1"]]]


def test_overlapping_windows_of_other_sizes_merge_into_one_group() -> None:
    objects = [obj(Channel.T, 0, 60), obj(Channel.Q, 30), obj(Channel.Q, 60)]
    assert names(plan_reads(objects), FeedRole.DELAYED) == [
        [["T-0-h-1"], ["Q-30-h-1"]],
        [["Q-60-h-1"]],
    ]


def test_channels_and_range_leave_objects_out() -> None:
    objects = [obj(Channel.T, 0), obj(Channel.T, 30), obj(Channel.Q, 30), obj(Channel.AM, 30)]
    plan = plan_reads(objects, [Channel.T, Channel.AM], TimeRange(T0 + 30 * MIN, T0 + 45 * MIN))
    assert names(plan, FeedRole.DELAYED) == [[["T-30-h-1"]]]
    assert names(plan, FeedRole.REALTIME) == [[["AM-30-h-1"]]]


def test_a_file_outside_the_layout_goes_to_each_host_it_may_feed() -> None:
    flat = obj(None, 0, minutes=10**9)
    plan = plan_reads([flat, obj(Channel.T, 0)], [Channel.T, Channel.FMV])
    assert names(plan, FeedRole.DELAYED) == [[["T-0-h-1"], ["None-0-h-1"]]]
    assert names(plan, FeedRole.REALTIME) == [[["None-0-h-1"]]]
    assert plan_reads([flat], [Channel.T])[FeedRole.REALTIME] == []
