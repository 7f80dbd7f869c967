"""Replay's readers: a local folder (plain and gzipped) and S3 on moto's server, and each
host's stream merged in recorded order across objects and channels."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from polygon_adapters.s3_upload import open_s3_client
from polygon_core.archive_lines import archive_line
from polygon_core.events import Channel
from polygon_core.rotation import marker_key, object_key, window_for
from polygon_core.subscriptions import FeedRole
from polygon_core.timestamps import iso_ms_bytes
from polygon_sim.replay_layout import TimeRange, plan_reads
from polygon_sim.replay_lines import ReplayEvent
from polygon_sim.replay_source import FolderArchive, HostStream, S3Archive
from tests.moto_server import unique_bucket

T0 = 1_746_626_400_000  # 2025-05-07T14:00:00Z
MIN = 60_000
PREFIX = "polygon/raw"


def element(channel: Channel, symbol: str, n: int) -> bytes:
    time_field = "s" if channel is Channel.AM else "t"
    return b'{"ev":"%s","sym":"%s","%s":%d,"n":%d}' % (
        channel.value.encode(),
        symbol.encode(),
        time_field.encode(),
        T0 + n,
        n,
    )


def lines(channel: Channel, items: list[tuple[int, str, int]]) -> bytes:
    """NDJSON of ``(ingest ms offset, symbol, n)`` items."""
    return b"".join(
        archive_line(channel, sym, iso_ms_bytes(T0 + at), element(channel, sym, n))
        for at, sym, n in items
    )


def objects() -> dict[str, bytes]:
    """Two 30-minute windows; T in two objects (seq 1, 2) and from two writers; Q, AM, FMV."""
    w0, w1 = window_for(T0, 30), window_for(T0 + 30 * MIN, 30)
    key = object_key
    return {
        key(PREFIX, "T", w0, "a", 1): lines(Channel.T, [(0, "AAPL", 1), (5, "MSFT", 2)]),
        key(PREFIX, "T", w0, "a", 2): lines(Channel.T, [(20, "AAPL", 5), (20, "AAPL", 6)]),
        key(PREFIX, "T", w0, "b", 1): lines(Channel.T, [(6, "TSLA", 3), (30, "TSLA", 7)]),
        key(PREFIX, "Q", w0, "a", 1): lines(Channel.Q, [(5, "AAPL", 4), (40, "MSFT", 8)])
        + b"garbage line\n",
        key(PREFIX, "T", w1, "a", 1): lines(Channel.T, [(30 * MIN, "AAPL", 9)]),
        key(PREFIX, "AM", w0, "a", 1): lines(Channel.AM, [(60_000, "AAPL", 1)]),
        key(PREFIX, "FMV", w0, "a", 1): lines(Channel.FMV, [(10, "AAPL", 2)]),
        marker_key(PREFIX, "T", w1): b"",
    }


def ns(events: list[ReplayEvent]) -> list[tuple[str, int]]:
    import msgspec

    return [(e.channel.value, msgspec.json.decode(e.raw)["n"]) for e in events]


async def drain(stream: HostStream) -> list[ReplayEvent]:
    out: list[ReplayEvent] = []
    while await stream.peek() is not None:
        out += stream.take(float("inf"), 3)
    await stream.aclose()
    return out


async def streams(archive, channels=tuple(Channel), time_range=None, symbols=None):
    time_range = time_range or TimeRange()
    listed = await archive.list_objects(channels, time_range)
    plan = plan_reads(listed, channels, time_range)
    return {
        role: await drain(HostStream(archive, plan[role], channels, time_range, symbols, 2))
        for role in FeedRole
    }


def write_folder(root: Path, gz: bool) -> None:
    for key, data in objects().items():
        path = root / "download" / (key + (".gz" if gz and key.endswith(".ndjson") else ""))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(data) if gz and key.endswith(".ndjson") else data)


ALL_DELAYED = [("T", 1), ("Q", 4), ("T", 2), ("T", 3), ("T", 5), ("T", 6), ("T", 7), ("Q", 8),
               ("T", 9)]  # fmt: skip
"""Ties on ingest time go to the earlier chain (Q sorts before T): one channel keeps its order."""


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
async def test_a_folder_replays_in_recorded_order(tmp_path, gz) -> None:
    write_folder(tmp_path, gz)
    result = await streams(FolderArchive(tmp_path))
    assert ns(result[FeedRole.DELAYED]) == ALL_DELAYED
    assert ns(result[FeedRole.REALTIME]) == [("FMV", 2), ("AM", 1)]
    first = next(iter(objects())) + (".gz" if gz else "")
    one = await streams(FolderArchive(tmp_path / "download" / first))
    assert ns(one[FeedRole.DELAYED]) == [("T", 1), ("T", 2)]


async def test_the_filters_and_the_counts(tmp_path) -> None:
    write_folder(tmp_path, False)
    archive = FolderArchive(tmp_path)
    span = TimeRange(T0 + 5, T0 + 31)
    result = await streams(archive, (Channel.T, Channel.FMV), span)
    assert ns(result[FeedRole.DELAYED]) == [("T", 2), ("T", 3), ("T", 5), ("T", 6), ("T", 7)]
    assert ns(result[FeedRole.REALTIME]) == [("FMV", 2)]
    only = await streams(archive, symbols={"MSFT"})
    assert ns(only[FeedRole.DELAYED]) == [("T", 2), ("Q", 8)]
    listed = await archive.list_objects(tuple(Channel), TimeRange())
    plan = plan_reads(listed)
    stream = HostStream(archive, plan[FeedRole.DELAYED], tuple(Channel), TimeRange())
    await drain(stream)
    counts = stream.counts
    assert (counts.objects, counts.lines, counts.events, counts.rejected) == (5, 10, 9, 1)


async def test_unread_events_come_back_first(tmp_path) -> None:
    write_folder(tmp_path, False)
    archive = FolderArchive(tmp_path)
    plan = plan_reads(await archive.list_objects(tuple(Channel), TimeRange()))
    stream = HostStream(archive, plan[FeedRole.DELAYED], tuple(Channel), TimeRange())
    await stream.peek()
    taken = stream.take(T0 + 5, 10)
    assert ns(taken) == [("T", 1), ("Q", 4), ("T", 2)]
    stream.unread(taken)
    assert ns(await drain(stream)) == ALL_DELAYED


async def test_a_missing_folder_is_an_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        await FolderArchive(tmp_path / "nope").list_objects(tuple(Channel), TimeRange())


@pytest.mark.integration
async def test_s3_replays_in_recorded_order_and_lists_only_the_range(s3) -> None:
    bucket = unique_bucket("replay")
    async with open_s3_client(s3.region, s3.endpoint_url, session=s3.aio_session()) as client:
        await client.create_bucket(Bucket=bucket)
        for key, data in objects().items():
            await client.put_object(Bucket=bucket, Key=key, Body=data)
        older = object_key(PREFIX, "T", window_for(T0 - 86_400_000, 30), "a", 1)
        await client.put_object(Bucket=bucket, Key=older, Body=lines(Channel.T, [(-1, "X", 0)]))
        archive = S3Archive(client, bucket, "/" + PREFIX + "/")
        result = await streams(archive)
        assert ns(result[FeedRole.DELAYED]) == [("T", 0), *ALL_DELAYED]
        assert ns(result[FeedRole.REALTIME]) == [("FMV", 2), ("AM", 1)]
        window = TimeRange(T0, T0 + 30 * MIN)
        listed = await archive.list_objects((Channel.T,), window)
        assert sorted(o.writer + str(o.seq) for o in listed) == ["a1", "a2", "b1"]
        result = await streams(archive, time_range=window)
        assert ns(result[FeedRole.DELAYED]) == ALL_DELAYED[:-1]


async def test_an_unreadable_object_is_skipped_and_reported(tmp_path) -> None:
    write_folder(tmp_path, True)
    keys = list(objects())
    cut = tmp_path / "download" / (keys[1] + ".gz")  # T seq 2: cut short
    cut.write_bytes(cut.read_bytes()[:-8])  # the gzip trailer
    gone = tmp_path / "download" / (keys[2] + ".gz")  # T from writer b: vanishes once listed
    archive = FolderArchive(tmp_path)
    plan = plan_reads(await archive.list_objects(tuple(Channel), TimeRange()))
    gone.unlink()
    stream = HostStream(archive, plan[FeedRole.DELAYED], tuple(Channel), TimeRange())
    got = ns(await drain(stream))
    assert got == [e for e in ALL_DELAYED if e not in {("T", 3), ("T", 7)}]  # cut: both kept
    assert sorted(stream.counts.bad_objects) == sorted(
        [str(cut.relative_to(tmp_path)), str(gone.relative_to(tmp_path))]
    )
    assert not stream.counts.failed
