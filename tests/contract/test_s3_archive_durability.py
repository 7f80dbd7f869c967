"""``S3_MAX_UNUPLOADED_SEC`` against moto: a quiet channel's lines reach S3 in time.

A quiet object's tail goes up as a copy under its part number (S3 keeps the last upload
of a part number), so after a crash recovery completes the object with every line up to
the newest copy; a tail of 5 MiB or more is cut as a part of its own instead. The clock is
a ``ManualClock``: nothing is sent before the tail is due, every figure is exact.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from polygon_adapters.memory import ManualClock
from polygon_core.events import Channel
from polygon_core.rotation import MIN_PART_BYTES, RotationPolicy, object_key
from tests.contract.test_s3_archive import (
    HOST,
    MIB,
    PREFIX,
    T0_MS,
    make_archive,
    moto,
    objects,
    open_uploads,
    padded_line,
    s3,
    window_at,
)
from tests.helpers import eventually

__all__ = ["moto", "s3"]  # the fixtures, imported for pytest

pytestmark = pytest.mark.integration


async def parts_in_s3(client: Any, bucket: str) -> list[int]:
    """Sizes of the parts of the one open upload, by part number."""
    [upload] = await open_uploads(client, bucket)
    listed = await client.list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    return [int(p["Size"]) for p in sorted(listed.get("Parts", []), key=lambda p: p["PartNumber"])]


async def test_a_quiet_tail_is_sent_as_a_copy_and_completes_one_object(
    s3: tuple[Any, str],
) -> None:
    client, bucket = s3
    clock = ManualClock(T0_MS)
    archive = make_archive(client, bucket, clock, max_unuploaded_s=10.0)  # due after 5 s
    archive.start()
    first = padded_line(Channel.AM, 1, clock.time_ms(), 300)
    archive.append(Channel.AM, first, clock.time_ms())
    await eventually(lambda: archive.stats.objects_opened == 1 and bool(archive._open_objects()))
    await eventually(lambda: bool(archive._open_objects()[0].upload_id))
    clock.advance(4.9)  # not due yet
    await asyncio.sleep(0.1)
    assert archive.stats.tail_copies_uploaded == 0
    clock.advance(0.2)
    await eventually(lambda: archive.stats.tail_copies_uploaded == 1)
    assert await parts_in_s3(client, bucket) == [len(first)]

    second = padded_line(Channel.AM, 2, clock.time_ms(), 300)
    archive.append(Channel.AM, second, clock.time_ms())
    clock.advance(5.1)
    await eventually(lambda: archive.stats.tail_copies_uploaded == 2)
    assert await parts_in_s3(client, bucket) == [len(first) + len(second)]  # replaced

    await archive.aclose()  # the last copy is the last part: not sent again
    assert archive.stats.tail_copies_uploaded == 2 and archive.stats.parts_uploaded == 1
    found = await objects(client, bucket)
    key = object_key(PREFIX, "AM", window_at(T0_MS), HOST, 1)
    assert list(found) == [key] and found[key] == first + second
    assert await open_uploads(client, bucket) == []


async def test_after_a_crash_recovery_completes_the_object_with_its_newest_copy(
    s3: tuple[Any, str],
) -> None:
    client, bucket = s3
    clock = ManualClock(T0_MS)
    archive = make_archive(client, bucket, clock, max_unuploaded_s=10.0)
    archive.start()
    lines = [padded_line(Channel.AM, i, clock.time_ms(), 300) for i in range(3)]
    archive.append(Channel.AM, lines[0], clock.time_ms())
    archive.append(Channel.AM, lines[1], clock.time_ms())
    clock.advance(5.1)
    await eventually(lambda: archive.stats.tail_copies_uploaded == 1)
    archive.append(Channel.AM, lines[2], clock.time_ms())  # not due: dies with the writer
    # the crash: every task of the writer stops where it is, nothing more is sent
    tasks = [*archive._tasks, archive._runner]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    after = make_archive(client, bucket, ManualClock(T0_MS + 60_000))
    report = await after.recover()
    key = object_key(PREFIX, "AM", window_at(T0_MS), HOST, 1)
    assert report.completed == [key]
    found = await objects(client, bucket)
    assert found[key] == lines[0] + lines[1]
    assert await open_uploads(client, bucket) == []


async def test_a_tail_of_5_mib_or_more_is_cut_as_a_part(s3: tuple[Any, str]) -> None:
    client, bucket = s3
    clock = ManualClock(T0_MS)
    policy = RotationPolicy.from_config(30, 64 * MIB, 8 * MIB)
    archive = make_archive(client, bucket, clock, policy=policy, max_unuploaded_s=10.0)
    archive.start()
    lines = [padded_line(Channel.T, i, clock.time_ms()) for i in range(81)]  # 5.06 MiB
    for line in lines:
        archive.append(Channel.T, line, clock.time_ms())
    clock.advance(5.1)
    await eventually(lambda: archive.stats.parts_uploaded == 1)
    assert archive.stats.time_cuts == 1 and archive.stats.tail_copies_uploaded == 0
    [size] = await parts_in_s3(client, bucket)
    assert MIN_PART_BYTES <= size == sum(map(len, lines))
    more = padded_line(Channel.T, 99, clock.time_ms())
    archive.append(Channel.T, more, clock.time_ms())
    await archive.aclose()
    found = await objects(client, bucket)
    assert list(found.values()) == [b"".join(lines) + more]
    assert archive.stats.parts_uploaded == 2
