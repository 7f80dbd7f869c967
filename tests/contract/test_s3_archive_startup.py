"""The S3 archive when S3 is unreachable at start (issue 13): it recovers in the background.

moto's server behind a real TCP proxy (``bench.soak.proxy.TcpProxy``) that refuses
connections until the test brings it up. Lines buffer within the memory budget while
recovery retries; objects opened meanwhile are numbered after what their folder already
holds once recovery is done; a close while S3 is still away gives up in time and counts
what it could not upload.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from bench.soak.proxy import TcpProxy

from polygon_adapters.memory import ManualClock
from polygon_adapters.s3_upload import open_s3_client
from polygon_core.errors import ArchiveMisconfigured
from polygon_core.events import Channel
from polygon_core.rotation import RotationPolicy, object_key
from tests.contract.test_s3_archive import (
    HOST,
    MIB,
    PREFIX,
    T0_MS,
    archive_lines,
    data_keys,
    make_archive,
    moto,
    objects,
    open_uploads,
    padded_line,
    window_at,
)
from tests.helpers import eventually
from tests.moto_server import MotoS3Server, unique_bucket

pytestmark = pytest.mark.integration
__all__ = ["moto"]  # the module-scoped fixture


@pytest.fixture
async def behind_proxy(moto: MotoS3Server) -> AsyncIterator[tuple[Any, Any, str, TcpProxy]]:
    """(direct client, client through the proxy, bucket, proxy); the proxy starts down."""
    bucket = unique_bucket("startup")
    proxy = TcpProxy(moto.port)
    await proxy.up()
    await proxy.down()
    url = f"http://127.0.0.1:{proxy.port}"
    async with (
        open_s3_client(moto.region, moto.endpoint_url, session=moto.aio_session()) as direct,
        open_s3_client(moto.region, url, session=moto.aio_session()) as through,
    ):
        await direct.create_bucket(Bucket=bucket)
        yield direct, through, bucket, proxy
    await proxy.down()


async def test_unreachable_at_start_buffers_then_recovers_and_numbers_after_existing(
    behind_proxy: tuple[Any, Any, str, TcpProxy],
) -> None:
    direct, through, bucket, proxy = behind_proxy
    window = window_at(T0_MS)
    existing = object_key(PREFIX, "T", window, HOST, 1)  # this host wrote here before
    await direct.put_object(Bucket=bucket, Key=existing, Body=b'{"before":"restart"}\n')
    clock = ManualClock(T0_MS)
    archive = make_archive(through, bucket, clock)
    archive.start()
    sent = archive_lines(50, T0_MS)
    for channel, line, _raw in sent:
        archive.append(channel, line, T0_MS)
    await eventually(lambda: archive.stats.in_outage)
    stats = archive.stats
    assert stats.recovering and stats.degraded and stats.parts_uploaded == 0
    assert stats.lines_buffered == len(sent) and await open_uploads(direct, bucket) == []

    await proxy.up()
    await eventually(lambda: not archive.stats.recovering, within_s=10)
    await archive.aclose()

    found = await objects(direct, bucket)
    assert data_keys(found, Channel.T) == [existing, object_key(PREFIX, "T", window, HOST, 2)]
    assert found[existing] == b'{"before":"restart"}\n'  # not overwritten
    for channel in (Channel.Q, Channel.AM, Channel.FMV):
        assert data_keys(found, channel) == [object_key(PREFIX, channel, window, HOST, 1)]
    got = b"".join(found[k] for k in data_keys(found) if k != existing)
    assert sorted(got.splitlines(keepends=True)) == sorted(line for _, line, _ in sent)
    assert not stats.degraded and stats.dropped_lines_total == 0
    assert stats.objects_completed == 4 and stats.open_uploads == 0


async def test_recovery_keeps_to_the_memory_budget(
    behind_proxy: tuple[Any, Any, str, TcpProxy],
) -> None:
    direct, through, bucket, proxy = behind_proxy
    archive = make_archive(
        through,
        bucket,
        ManualClock(T0_MS),
        policy=RotationPolicy.from_config(30, 64 * MIB, 5 * MIB),
        max_buffer_bytes=6 * MIB,
        drop_quiet_s=0.05,
    )
    archive.start()
    for i in range(8 * 16):  # 8 MiB of 64 KiB lines: 6 MiB held, the rest dropped
        archive.append(Channel.T, padded_line(Channel.T, i, T0_MS), T0_MS)
    stats = archive.stats
    assert stats.bytes_buffered <= 6 * MIB and stats.dropped_lines[Channel.T] == 32
    assert stats.dropping and stats.degraded
    await proxy.up()
    await eventually(lambda: not archive.stats.recovering, within_s=10)
    await archive.aclose()
    found = await objects(direct, bucket)
    (key,) = data_keys(found, Channel.T)
    assert len(found[key]) == 96 * 64 * 1024  # every line held was archived
    assert stats.bytes_buffered == 0 and not stats.dropping


async def test_close_while_s3_is_still_away_gives_up_in_time_and_counts(
    behind_proxy: tuple[Any, Any, str, TcpProxy],
) -> None:
    _direct, through, bucket, _proxy = behind_proxy
    archive = make_archive(through, bucket, ManualClock(T0_MS))
    archive.start()
    sent = archive_lines(10, T0_MS)
    for channel, line, _raw in sent:
        archive.append(channel, line, T0_MS)
    await eventually(lambda: archive.stats.in_outage)
    await archive.aclose(timeout_s=0.3)
    stats = archive.stats
    assert stats.objects_abandoned == 4 and stats.lost_lines == len(sent)
    assert stats.open_uploads == 0 and stats.objects_completed == 0


async def test_missing_bucket_found_by_background_recovery_ends_run(moto: MotoS3Server) -> None:
    async with open_s3_client(moto.region, moto.endpoint_url, session=moto.aio_session()) as c:
        archive = make_archive(c, unique_bucket("absent"), ManualClock(T0_MS))
        with pytest.raises(ArchiveMisconfigured, match="NoSuchBucket"):
            await archive.run()
        await archive.aclose(timeout_s=1.0)
        with pytest.raises(ArchiveMisconfigured, match="does not exist"):
            await make_archive(c, unique_bucket("absent"), ManualClock(T0_MS)).recover()


async def test_recovery_lists_the_channels_concurrently(
    behind_proxy: tuple[Any, Any, str, TcpProxy],
) -> None:
    """Each channel's listings run beside the others' (S3's answer time is paid once, not
    four times): the proxy sees a connection per channel open at once, where calls one
    after another would have one open at a time."""
    direct, through, bucket, proxy = behind_proxy
    window = window_at(T0_MS)
    for channel in Channel:
        key = object_key(PREFIX, channel, window, HOST, 3)
        await direct.put_object(Bucket=bucket, Key=key, Body=b'{"before":"restart"}\n')
    await proxy.up()
    archive = make_archive(through, bucket, ManualClock(T0_MS))
    report = await archive.recover()
    assert report.seeded == {channel: 3 for channel in Channel}
    assert list(report.seeded) == list(Channel)  # the report in channel order
    assert proxy.most_open >= len(Channel)
    await archive.aclose()


async def test_with_ha_another_writers_upload_waits_for_the_grace(moto: MotoS3Server) -> None:
    """``HA_ENABLED`` (``recover_others_after_s``): an archive that never ran (a standby's)
    touches nothing, not even at close; a task that took over finishes its own hostname's
    uploads at once, another writer's (a predecessor completing its objects after the
    handover) only after the grace. Before, a standby's start-up recovery completed the
    active task's open uploads (found by the soak)."""
    bucket = unique_bucket("others")
    session = moto.aio_session()
    async with open_s3_client(moto.region, moto.endpoint_url, session=session) as s3:
        await s3.create_bucket(Bucket=bucket)
        window = window_at(T0_MS)
        theirs = object_key(PREFIX, Channel.T, window, "host-b", 1)
        mine = object_key(PREFIX, Channel.Q, window, HOST, 1)
        for key in (theirs, mine):
            upload = await s3.create_multipart_upload(Bucket=bucket, Key=key)
            part = {"Key": key, "UploadId": upload["UploadId"], "PartNumber": 1}
            await s3.upload_part(Bucket=bucket, Body=b'{"x":1}\n', **part)
        standby = make_archive(s3, bucket, ManualClock(T0_MS), recover_others_after_s=0.5)
        await standby.aclose()
        assert len(await open_uploads(s3, bucket)) == 2
        archive = make_archive(s3, bucket, ManualClock(T0_MS), recover_others_after_s=1.0)
        report = await archive.recover()  # its own upload, in the foreground
        assert report.completed == [mine]
        assert len(await open_uploads(s3, bucket)) == 1
        archive.start()
        await eventually(lambda: archive.stats.recovered_completed == 2, 5)
        assert await open_uploads(s3, bucket) == []
        assert (await objects(s3, bucket))[theirs] == b'{"x":1}\n'
        await archive.aclose()


async def test_with_ha_a_close_before_the_grace_leaves_other_writers_uploads(
    moto: MotoS3Server,
) -> None:
    """A task that stops within the grace leaves another writer's upload open (for the next
    task to take over): the step is cancelled, not left to run after the close."""
    bucket = unique_bucket("others-left")
    session = moto.aio_session()
    async with open_s3_client(moto.region, moto.endpoint_url, session=session) as s3:
        await s3.create_bucket(Bucket=bucket)
        theirs = object_key(PREFIX, Channel.T, window_at(T0_MS), "host-b", 1)
        upload = await s3.create_multipart_upload(Bucket=bucket, Key=theirs)
        part = {"Key": theirs, "UploadId": upload["UploadId"], "PartNumber": 1}
        await s3.upload_part(Bucket=bucket, Body=b'{"x":1}\n', **part)
        archive = make_archive(s3, bucket, ManualClock(T0_MS), recover_others_after_s=0.3)
        await archive.recover()
        archive.start()
        await archive.aclose()
        await asyncio.sleep(0.6)
        assert len(await open_uploads(s3, bucket)) == 1
        assert archive.stats.recovered_completed == 0
