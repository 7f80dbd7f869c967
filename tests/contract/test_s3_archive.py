"""The S3 archive against moto's standalone server, over real HTTP with botocore signing.

Integration tests skip when moto cannot start, except under ``CI=true`` where they fail.
The part-size rule is checked on what S3 holds (``ListParts`` before completion, the
multipart ETag's part count after) and moto itself refuses a completion whose non-last
part is under 5 MiB (checked first, so a passing completion proves the rule).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sys
import textwrap
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from botocore.exceptions import ClientError
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from polygon_adapters.memory import InMemoryArchive, ManualClock
from polygon_adapters.s3_archive import S3MultipartArchive, S3RetryPolicy
from polygon_adapters.s3_markers import marker_metadata
from polygon_adapters.s3_objects import ArchiveObject
from polygon_adapters.s3_upload import open_s3_client
from polygon_core.archive_lines import archive_line
from polygon_core.archive_policy import UploadedPart, completable_parts, lookback_folders
from polygon_core.codec import decode_frame
from polygon_core.events import Channel
from polygon_core.ports import RawArchive
from polygon_core.rotation import (
    MIN_PART_BYTES,
    RotationPolicy,
    marker_key,
    object_key,
    seq_from_key,
    window_for,
)
from polygon_core.timestamps import iso_ms
from tests.helpers import eventually, missing_server
from tests.moto_server import MotoS3Server, moto_available, unique_bucket

MIB = 1024 * 1024
T0_MS = 1_746_612_420_000  # 2025-05-07T10:07:00Z
HOST = "host-a"
PREFIX = "polygon/raw"
REPO = Path(__file__).resolve().parents[2]

integration = pytest.mark.integration


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoS3Server]:
    if not moto_available():
        missing_server("moto[server] is not installed")
    server = MotoS3Server()
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001 - any start failure means "no server"
        missing_server(f"moto server did not start: {exc}")
    yield server
    server.stop()


@pytest.fixture
async def s3(moto: MotoS3Server) -> AsyncIterator[tuple[Any, str]]:
    async with open_s3_client(moto.region, moto.endpoint_url, session=moto.aio_session()) as c:
        bucket = unique_bucket()
        await c.create_bucket(Bucket=bucket)
        yield c, bucket


def make_archive(
    client: Any, bucket: str, clock: ManualClock, **options: Any
) -> S3MultipartArchive:
    policy = options.pop("policy", None) or RotationPolicy.from_config(30, 64 * MIB, 5 * MIB)
    options.setdefault("tick_s", 0.01)
    options.setdefault("retry", S3RetryPolicy(initial_s=0.02, max_s=0.1, recovery_attempts=3))
    return S3MultipartArchive(
        client, bucket=bucket, prefix=PREFIX, hostname=HOST, policy=policy, clock=clock, **options
    )


# -- lines built the way ingest builds them ----------------------------------------------------


def wire_elements(i: int) -> list[bytes]:
    """One element per channel, integral prices, extra fields, a big int, one reject."""
    return [
        b'{"ev":"T","sym":"AAPL","i":"5298352502%04d","x":4,"p":192,"s":100,"c":[12,37],'
        b'"t":1746612420%03d,"q":%d,"z":3,"pt":1746612419999}' % (i, i % 1000, i),
        b'{"ev":"Q","sym":"BRK.B","bx":4,"ap":412.10,"bp":412,"as":3,"bs":2,"c":1,'
        b'"t":1746612420%03d,"q":%d,"z":1}' % (i % 1000, i),
        b'{"ev":"AM","sym":"BACpB","v":4110,"av":9470157,"op":0.4372,"vw":0.4488,"o":0.4488,'
        b'"c":0.4486,"h":0.4489,"l":0.4486,"a":0.4352,"z":685,"s":1746612360000,'
        b'"e":1746612420000,"dv":"4989.0","n":%d}' % i,
        b'{"ev":"FMV","fmv":189.22,"sym":"AAPL","t":1788877046310003385,"n":%d}' % i,
        b'{"ev":"Q","sym":"MSFT","bp":"oops","n":%d}' % i,  # a reject: still archived
    ]


def archive_lines(count: int, ingest_ms: int) -> list[tuple[Channel, bytes, bytes]]:
    """``(channel, line, raw element)`` for ``count`` frames, in arrival order."""
    stamp = iso_ms(ingest_ms).encode()
    out: list[tuple[Channel, bytes, bytes]] = []
    for i in range(count):
        frame = decode_frame(b"[" + b",".join(wire_elements(i)) + b"]", keep_raw=True)
        for channel, symbol, raw in frame.archive:
            out.append((channel, archive_line(channel, symbol, stamp, raw), bytes(raw)))
    return out


def padded_line(channel: Channel, i: int, ingest_ms: int, size: int = 64 * 1024) -> bytes:
    """An archive line of exactly ``size`` bytes (cheap bulk for part-size tests)."""
    stamp = iso_ms(ingest_ms).encode()

    def build(pad: bytes) -> bytes:
        raw = b'{"ev":"%s","sym":"PAD","n":%d,"pad":"%s"}' % (channel.value.encode(), i, pad)
        return archive_line(channel, "PAD", stamp, raw)

    return build(b"a" * (size - len(build(b""))))


async def objects(client: Any, bucket: str, prefix: str = "") -> dict[str, bytes]:
    """Every object under ``prefix`` with its body, in key order."""
    out: dict[str, bytes] = {}
    paginator = client.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            answer = await client.get_object(Bucket=bucket, Key=item["Key"])
            async with answer["Body"] as body:
                out[item["Key"]] = await body.read()
    return dict(sorted(out.items()))


async def open_uploads(client: Any, bucket: str) -> list[dict[str, Any]]:
    answer = await client.list_multipart_uploads(Bucket=bucket)
    uploads: list[dict[str, Any]] = answer.get("Uploads", [])
    return uploads


def data_keys(found: dict[str, bytes], channel: Channel | None = None) -> list[str]:
    tag = f"/channel={channel.value}/" if channel else "/channel="
    return [k for k in found if tag in k and k.endswith(".ndjson")]


def window_at(ms: int) -> Any:
    return window_for(ms, 30)


# -- pure rules (always run) -----------------------------------------------------------------


def test_completable_parts_stops_at_a_gap_and_at_a_short_part() -> None:
    big = MIN_PART_BYTES

    def parts(*spec: tuple[int, int]) -> list[UploadedPart]:
        return [UploadedPart(n, f'"e{n}"', size) for n, size in spec]

    assert [p.number for p in completable_parts(parts((1, big), (2, big), (3, 10)))] == [1, 2, 3]
    assert [p.number for p in completable_parts(parts((1, big), (3, big), (4, 5)))] == [1]
    assert [p.number for p in completable_parts(parts((1, 10), (2, big)))] == [1]
    assert completable_parts(parts((2, big), (3, big))) == []
    assert completable_parts([]) == []


def test_lookback_folders_cover_the_days_of_the_lookback() -> None:
    folders = lookback_folders("p", "T", T0_MS, 48)
    assert folders == [
        "p/channel=T/ingest_dt=2025/05/05/",
        "p/channel=T/ingest_dt=2025/05/06/",
        "p/channel=T/ingest_dt=2025/05/07/",
    ]
    assert lookback_folders("", "Q", T0_MS, 0) == ["channel=Q/ingest_dt=2025/05/07/"]


def test_marker_metadata_is_ascii_and_complete() -> None:
    meta = marker_metadata("p/channel=T/x-seq=000001.ndjson", "id+/=", T0_MS, 2, "host é")
    assert meta == {
        "object-key": "p/channel=T/x-seq=000001.ndjson",
        "upload-id": "id%2B%2F%3D",
        "started-at": "2025-05-07T10:07:00.000Z",
        "open-uploads": "2",
        "hostname": "host%20%C3%A9",
    }
    assert all(v.isascii() for v in meta.values())


def test_budget_below_one_part_is_refused() -> None:
    policy = RotationPolicy.from_config(30, 64 * MIB, 5 * MIB)
    with pytest.raises(ValueError, match="max_buffer_bytes"):
        S3MultipartArchive(
            object(), bucket="b", prefix="p", hostname="h", policy=policy,
            clock=ManualClock(), max_buffer_bytes=MIB,
        )  # fmt: skip


@given(
    st.lists(st.lists(st.integers(1, 300), min_size=1, max_size=6), max_size=30),
    st.integers(1, 500),
)
def test_parts_end_on_line_ends(blocks: list[list[int]], part_size: int) -> None:
    """Appended blocks of lines (random lengths) are cut at the first line end at or past
    the part size: every part holds whole lines, all but the last reach the part size and
    pass it by less than their last line, and the parts rejoin into what was written."""
    obj = ArchiveObject(Channel.T, window_at(T0_MS), 1, "k", "m", T0_MS, 0.0)
    written = []
    for block in blocks:
        lines = b"".join(b"x" * (n - 1) + b"\n" for n in block)
        obj.add(lines, len(block), part_size)
        written.append(lines)
    obj.finish()
    parts = list(obj.ready)
    assert b"".join(p.data.getvalue() for p in parts) == b"".join(written)
    assert [p.number for p in parts] == list(range(1, len(parts) + 1))
    for i, part in enumerate(parts):
        data = part.data.getvalue()
        assert part.size == len(data) and part.lines == data.count(b"\n")
        assert data.endswith(b"\n")
        if i < len(parts) - 1:
            last_line = len(data) - data.rfind(b"\n", 0, len(data) - 1) - 1
            assert part_size <= len(data) < part_size + last_line


# -- the RawArchive contract: every adapter, read back around it ------------------------------


class ArchiveBackend(ABC):
    """How to build the archive under test and read its lines back without it."""

    @abstractmethod
    async def open(self, clock: ManualClock) -> RawArchive: ...

    @abstractmethod
    async def read_back(self) -> dict[Channel, list[bytes]]:
        """Every line per channel, in order, read directly from the storage."""

    async def aclose(self) -> None:
        return None


class RawArchiveContract:
    """The port's contract; subclasses provide a ``backend_factory``."""

    backend_factory: Callable[[], ArchiveBackend]

    async def test_lines_come_back_per_channel_in_arrival_order(self) -> None:
        backend = self.backend_factory()
        clock = ManualClock(T0_MS)
        try:
            archive = await backend.open(clock)
            sent = archive_lines(20, clock.time_ms())
            for channel, line, _raw in sent:
                archive.append(channel, line, clock.time_ms())
            await archive.aclose()
            await archive.aclose()  # a second close is harmless
            got = await backend.read_back()
            archive.append(Channel.T, b'{"late":1}\n', clock.time_ms())  # never raises
        finally:
            await backend.aclose()
        assert got == {c: [line for ch, line, _ in sent if ch is c] for c in Channel}

    async def test_a_frames_lines_appended_at_once_count_one_by_one(self) -> None:
        """The ingest hands over all of a frame's lines of a channel in one call."""
        backend = self.backend_factory()
        clock = ManualClock(T0_MS)
        try:
            archive = await backend.open(clock)
            sent = archive_lines(30, clock.time_ms())
            for channel in Channel:
                lines = [line for ch, line, _ in sent if ch is channel]
                if lines:
                    archive.append(channel, b"".join(lines), clock.time_ms(), len(lines))
            stats = getattr(archive, "stats", None)
            if stats is not None:
                assert sum(stats.lines_appended.values()) == len(sent)
            await archive.aclose()
            got = await backend.read_back()
        finally:
            await backend.aclose()
        assert got == {c: [line for ch, line, _ in sent if ch is c] for c in Channel}

    def test_stateful(self) -> None:
        machine = type("Machine", (ArchiveMachine,), {"backend_factory": self.backend_factory})
        run_state_machine_as_test(
            machine, settings=settings(max_examples=8, stateful_step_count=25, deadline=None)
        )


class ArchiveMachine(RuleBasedStateMachine):
    """Archive vs a list-per-channel model; time moves by a manual clock, uploads run on
    the machine's own loop while it ``settle``s, and the model is checked after close."""

    backend_factory: Callable[[], ArchiveBackend] | None = None

    def __init__(self) -> None:
        super().__init__()
        assert self.backend_factory is not None
        self.loop = asyncio.new_event_loop()
        self.backend = self.backend_factory()
        self.clock = ManualClock(T0_MS)
        self.archive = self.loop.run_until_complete(self.backend.open(self.clock))
        self.model: dict[Channel, list[bytes]] = {c: [] for c in Channel}
        self.count = 0

    @rule(channel=st.sampled_from(list(Channel)), size=st.integers(150, 3000))
    def append(self, channel: Channel, size: int) -> None:
        line = padded_line(channel, self.count, self.clock.time_ms(), size)
        self.count += 1
        self.archive.append(channel, line, self.clock.time_ms())
        self.model[channel].append(line)

    @rule(seconds=st.sampled_from([0.001, 1.0, 600.0, 1800.0, 86_400.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def settle(self) -> None:
        self.loop.run_until_complete(asyncio.sleep(0.02))

    def teardown(self) -> None:
        try:
            self.loop.run_until_complete(self.archive.aclose())
            assert self.loop.run_until_complete(self.backend.read_back()) == self.model
        finally:
            self.loop.run_until_complete(self.backend.aclose())
            self.loop.close()


class MemoryArchiveBackend(ArchiveBackend):
    def __init__(self) -> None:
        self.memory = InMemoryArchive()

    async def open(self, clock: ManualClock) -> RawArchive:
        return self.memory

    async def read_back(self) -> dict[Channel, list[bytes]]:
        return {c: list(lines) for c, lines in self.memory.lines.items()}


class TestInMemoryArchive(RawArchiveContract):
    backend_factory = MemoryArchiveBackend


class S3ArchiveBackend(ArchiveBackend):
    """A fresh bucket per archive; objects of at most 4 KiB so rotation happens a lot.

    ``read_back`` also checks what only S3 can show: ``seq`` from 1 without a gap per
    folder, objects within the size limit (a longer line alone), every line's ``ingestTs``
    inside its folder's window, no marker and no open upload left.
    """

    server: MotoS3Server | None = None
    max_object_bytes = 4096

    def __init__(self) -> None:
        self.stack = AsyncExitStack()
        self.client: Any = None
        self.bucket = unique_bucket("contract")

    async def open(self, clock: ManualClock) -> RawArchive:
        server = self.server
        assert server is not None
        self.client = await self.stack.enter_async_context(
            open_s3_client(server.region, server.endpoint_url, session=server.aio_session())
        )
        await self.client.create_bucket(Bucket=self.bucket)
        policy = RotationPolicy.from_config(30, self.max_object_bytes, 5 * MIB)
        archive = make_archive(self.client, self.bucket, clock, policy=policy)
        await archive.recover()
        archive.start()
        return archive

    async def read_back(self) -> dict[Channel, list[bytes]]:
        found = await objects(self.client, self.bucket)
        assert await open_uploads(self.client, self.bucket) == []
        assert all(k.endswith(".ndjson") for k in found), "a marker was left behind"
        got: dict[Channel, list[bytes]] = {c: [] for c in Channel}
        seqs: dict[str, list[int | None]] = {}
        for key, body in found.items():
            folder, _, _name = key.rpartition("/")
            seqs.setdefault(folder, []).append(seq_from_key(key, HOST))
            lines = body.splitlines(keepends=True)
            assert len(body) <= self.max_object_bytes or len(lines) == 1
            stamp = re.search(r"part=(\d{8}_\d{4})-", folder)
            assert stamp is not None
            for line in lines:
                decoded = msgspec.json.decode(line)
                ingest = msgspec.json.decode(
                    b'"' + decoded["ingestTs"].encode() + b'"', type=datetime
                )
                assert window_for(int(ingest.timestamp() * 1000), 30).start_ms == int(
                    datetime.strptime(stamp.group(1) + "+0000", "%Y%m%d_%H%M%z").timestamp() * 1000
                )
                got[Channel(decoded["channel"])].append(line)
        for folder, numbers in seqs.items():
            assert numbers == list(range(1, len(numbers) + 1)), folder
        return got

    async def aclose(self) -> None:
        await self.stack.aclose()


@integration
class TestS3Archive(RawArchiveContract):
    backend_factory = S3ArchiveBackend

    @pytest.fixture(autouse=True)
    def _server(self, moto: MotoS3Server) -> None:
        S3ArchiveBackend.server = moto


# -- layout and lines ------------------------------------------------------------------------


@integration
async def test_layout_content_type_and_lines_byte_for_byte(s3: tuple[Any, str]) -> None:
    client, bucket = s3
    clock = ManualClock(T0_MS)
    archive = make_archive(client, bucket, clock)
    await archive.recover()
    archive.start()
    sent = archive_lines(300, clock.time_ms())
    for channel, line, _raw in sent:
        archive.append(channel, line, clock.time_ms())
    await archive.aclose()

    found = await objects(client, bucket)
    folder = "part=20250507_1000-20250507_1029"
    assert list(found) == [
        f"{PREFIX}/channel={c}/ingest_dt=2025/05/07/hour=10/{folder}/{HOST}-seq=000001.ndjson"
        for c in ("AM", "FMV", "Q", "T")
    ]
    for key in found:
        head = await client.head_object(Bucket=bucket, Key=key)
        assert head["ContentType"] == "application/x-ndjson"
    stamp = iso_ms(T0_MS)
    for channel in Channel:
        expected = [(line, raw) for c, line, raw in sent if c is channel]
        body = found[data_keys(found, channel)[0]]
        lines = body.splitlines(keepends=True)
        assert len(lines) == len(expected) == archive.stats.lines_appended[channel]
        for got, (line, raw) in zip(lines, expected, strict=True):
            assert got == line
            decoded = msgspec.json.decode(got)
            assert list(decoded)[:3] == ["channel", "symbol", "ingestTs"]
            assert decoded["channel"] == channel.value
            assert decoded["ingestTs"] == stamp
            assert got.endswith(raw[1:] + b"\n")  # the wire fields, byte for byte
            assert {k: decoded[k] for k in msgspec.json.decode(raw)} == msgspec.json.decode(raw)
    assert archive.stats.lines_appended[Channel.Q] == 600  # the reject is archived too
    assert b'"ap":412.10,"bp":412' in found[data_keys(found, Channel.Q)[0]]
    assert await open_uploads(client, bucket) == []
    assert not [k for k in found if k.endswith("uploading.marker")]
    assert archive.stats.objects_completed == 4 and archive.stats.open_uploads == 0
    assert archive.stats.bytes_buffered == 0 and archive.stats.lines_buffered == 0


# -- rotation --------------------------------------------------------------------------------


@integration
async def test_rotation_by_size_numbers_objects_within_the_window(s3: tuple[Any, str]) -> None:
    client, bucket = s3
    clock = ManualClock(T0_MS)
    policy = RotationPolicy.from_config(30, 2000, 5 * MIB)
    archive = make_archive(client, bucket, clock, policy=policy)
    archive.start()
    sent = [line for c, line, _ in archive_lines(40, T0_MS) if c is Channel.T]
    for line in sent:
        archive.append(Channel.T, line, clock.time_ms())
    await archive.aclose()

    found = await objects(client, bucket)
    keys = data_keys(found, Channel.T)
    assert len(keys) > 3
    assert [seq_from_key(k, HOST) for k in keys] == list(range(1, len(keys) + 1))
    for key in keys:
        assert len(found[key]) <= 2000
        assert found[key].endswith(b"\n")
    assert b"".join(found[k] for k in keys) == b"".join(sent)
    assert archive.stats.objects_completed == len(keys)


@integration
async def test_rotation_by_window_and_by_timer(s3: tuple[Any, str]) -> None:
    client, bucket = s3
    start = T0_MS + (59 - 7) * 60_000 + 58_000  # 10:59:58
    clock = ManualClock(start)
    archive = make_archive(client, bucket, clock)
    archive.start()
    first = padded_line(Channel.FMV, 1, clock.time_ms(), 200)
    archive.append(Channel.FMV, first, clock.time_ms())
    clock.advance(3)  # 11:00:01, a new window and a new hour
    second = padded_line(Channel.FMV, 2, clock.time_ms(), 200)
    archive.append(Channel.FMV, second, clock.time_ms())
    await eventually(lambda: archive.stats.objects_completed == 1)

    # no new line: the timer completes the 11:00 object when its window ends
    clock.advance(30 * 60)
    await eventually(lambda: archive.stats.objects_completed == 2)
    assert await open_uploads(client, bucket) == []
    found = await objects(client, bucket)
    base = f"{PREFIX}/channel=FMV/ingest_dt=2025/05/07"
    assert list(found) == [
        f"{base}/hour=10/part=20250507_1030-20250507_1059/{HOST}-seq=000001.ndjson",
        f"{base}/hour=11/part=20250507_1100-20250507_1129/{HOST}-seq=000001.ndjson",
    ]
    assert list(found.values()) == [first, second]

    # a late line stamped in an older window goes to the newest one (windows never go back)
    archive.append(Channel.FMV, first, start)
    await archive.aclose()
    found = await objects(client, bucket)
    late = f"{base}/hour=11/part=20250507_1100-20250507_1129/{HOST}-seq=000002.ndjson"
    assert found[late] == first


# -- parts and markers -----------------------------------------------------------------------


@integration
async def test_moto_enforces_the_5_mib_minimum(s3: tuple[Any, str]) -> None:
    client, bucket = s3
    created = await client.create_multipart_upload(Bucket=bucket, Key="small")
    upload_id = created["UploadId"]
    etags = []
    for number in (1, 2):
        part = await client.upload_part(
            Bucket=bucket, Key="small", UploadId=upload_id, PartNumber=number, Body=b"x" * 1024
        )
        etags.append({"PartNumber": number, "ETag": part["ETag"]})
    with pytest.raises(ClientError, match="EntityTooSmall"):
        await client.complete_multipart_upload(
            Bucket=bucket, Key="small", UploadId=upload_id, MultipartUpload={"Parts": etags}
        )
    await client.abort_multipart_upload(Bucket=bucket, Key="small", UploadId=upload_id)


@integration
async def test_parts_follow_s3_rules_and_the_marker_tracks_the_upload(
    s3: tuple[Any, str],
) -> None:
    client, bucket = s3
    clock = ManualClock(T0_MS)
    archive = make_archive(client, bucket, clock)
    archive.start()
    lines = [padded_line(Channel.T, i, clock.time_ms()) for i in range(184)]  # 11.5 MiB
    for line in lines:
        archive.append(Channel.T, line, clock.time_ms())
    await eventually(lambda: archive.stats.parts_uploaded == 2, within_s=20)

    window = window_at(T0_MS)
    key = object_key(PREFIX, "T", window, HOST, 1)
    [upload] = await open_uploads(client, bucket)
    assert upload["Key"] == key
    listed = await client.list_parts(Bucket=bucket, Key=key, UploadId=upload["UploadId"])
    assert [(p["PartNumber"], p["Size"]) for p in listed["Parts"]] == [(1, 5 * MIB), (2, 5 * MIB)]

    marker = await client.head_object(Bucket=bucket, Key=marker_key(PREFIX, "T", window))
    assert marker["ContentLength"] == 0
    assert marker["Metadata"] == {
        "object-key": key,
        "upload-id": upload["UploadId"],
        "started-at": iso_ms(T0_MS),
        "open-uploads": "1",
        "hostname": HOST,
    }
    assert archive.stats.open_uploads == 1
    assert archive.stats.bytes_buffered == len(b"".join(lines)) - 10 * MIB

    await archive.aclose()
    head = await client.head_object(Bucket=bucket, Key=key)
    assert head["ETag"].endswith('-3"')  # three parts: 5 MiB, 5 MiB and the rest
    assert head["ContentLength"] == len(b"".join(lines))
    found = await objects(client, bucket)
    assert list(found) == [key]  # the marker is gone
    assert found[key] == b"".join(lines)
    assert archive.stats.parts_uploaded == 3
    assert archive.stats.bytes_uploaded == len(found[key])


@integration
async def test_one_marker_per_folder_while_two_uploads_are_open(s3: tuple[Any, str]) -> None:
    client, bucket = s3
    clock = ManualClock(T0_MS)
    policy = RotationPolicy.from_config(30, 6 * MIB, 5 * MIB)
    archive = make_archive(client, bucket, clock, policy=policy, upload_concurrency=1)
    archive.start()
    lines = [padded_line(Channel.Q, i, clock.time_ms()) for i in range(100)]  # 6.25 MiB
    for line in lines:
        archive.append(Channel.Q, line, clock.time_ms())
    window = window_at(T0_MS)
    await eventually(lambda: archive.stats.objects_completed == 1, within_s=20)
    # the first object is complete, the second still open: the marker describes it
    wanted = {"object-key": object_key(PREFIX, "Q", window, HOST, 2), "open-uploads": "1"}
    async with asyncio.timeout(10):
        while True:
            marker = await client.head_object(Bucket=bucket, Key=marker_key(PREFIX, "Q", window))
            if {k: marker["Metadata"].get(k) for k in wanted} == wanted:
                break
            await asyncio.sleep(0.01)
    await archive.aclose()
    found = await objects(client, bucket)
    assert data_keys(found) == list(found)
    assert len(found) == 2
    assert b"".join(found.values()) == b"".join(lines)


# -- failures --------------------------------------------------------------------------------

CRASHING_WRITER = textwrap.dedent(
    """
    import asyncio, os, sys
    from polygon_adapters.memory import ManualClock
    from polygon_adapters.s3_archive import S3MultipartArchive
    from polygon_adapters.s3_upload import open_s3_client
    from polygon_core.archive_lines import archive_line
    from polygon_core.events import Channel
    from polygon_core.rotation import RotationPolicy

    async def main():
        bucket, prefix, host, now_ms = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
        region, endpoint = os.environ["AWS_REGION"], os.environ["S3_ENDPOINT_URL"]
        async with open_s3_client(region, endpoint) as client:
            archive = S3MultipartArchive(
                client, bucket=bucket, prefix=prefix, hostname=host, clock=ManualClock(now_ms),
                policy=RotationPolicy.from_config(30, 64 * 2**20, 5 * 2**20), tick_s=0.01,
            )
            archive.start()
            for i in range(176):  # 11 MiB of T: two full parts, the rest in memory
                raw = b'{"ev":"T","n":%d,"pad":"%s"}' % (i, b"t" * 65400)
                archive.append(Channel.T, archive_line(Channel.T, "X", b"ts", raw), now_ms)
            archive.append(Channel.Q, b'{"channel":"Q","n":1}', now_ms)  # no part yet
            while True:  # both uploads and both markers in S3, two parts of T uploaded
                uploads = await client.list_multipart_uploads(Bucket=bucket)
                listed = await client.list_objects_v2(Bucket=bucket)
                markers = [o for o in listed.get("Contents", []) if "marker" in o["Key"]]
                if (archive.stats.parts_uploaded == 2 and len(uploads.get("Uploads", [])) == 2
                        and len(markers) == 2):
                    break
                await asyncio.sleep(0.01)
            print("ready", flush=True)
            await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


@integration
async def test_recovery_after_sigkill_completes_aborts_and_cleans_up(
    moto: MotoS3Server, s3: tuple[Any, str]
) -> None:
    client, bucket = s3
    now = T0_MS
    stale_window = window_at(now - 3 * 3600_000)
    stale = marker_key(PREFIX, "AM", stale_window)
    env = {**os.environ, **moto.env()}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASHING_WRITER,
        bucket,
        PREFIX,
        HOST,
        str(now),
        stdout=asyncio.subprocess.PIPE,
        env=env,
        cwd=REPO,
    )
    try:
        assert process.stdout is not None
        assert await asyncio.wait_for(process.stdout.readline(), 60) == b"ready\n"
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
    # put after the writer's own start-up recovery, which would have removed it
    await client.put_object(Bucket=bucket, Key=stale, Body=b"")
    window = window_at(now)
    assert len(await open_uploads(client, bucket)) == 2
    markers = [marker_key(PREFIX, c, window) for c in ("T", "Q")]
    for key in markers:
        await client.head_object(Bucket=bucket, Key=key)

    clock = ManualClock(now + 60_000)
    archive = make_archive(client, bucket, clock)
    report = await archive.recover()
    t_key = object_key(PREFIX, "T", window, HOST, 1)
    q_key = object_key(PREFIX, "Q", window, HOST, 1)
    assert report.completed == [t_key]
    assert report.aborted == [q_key]
    assert sorted(report.markers_removed) == sorted([*markers, stale])
    assert report.seeded[Channel.T] == 1 and report.seeded[Channel.Q] == 0
    assert await open_uploads(client, bucket) == []
    found = await objects(client, bucket)
    assert list(found) == [t_key]
    # the two uploaded parts, each cut at the first line end past 5 MiB: whole lines only,
    # the first ones written, in order; the rest died with the writer
    written = [
        archive_line(Channel.T, "X", b"ts", b'{"ev":"T","n":%d,"pad":"%s"}' % (i, b"t" * 65400))
        for i in range(176)
    ]
    per_part = -(-5 * MIB // len(written[0]))  # lines of one part (all lines are equal)
    assert found[t_key] == b"".join(written[: 2 * per_part])
    *whole, end = found[t_key].split(b"\n")
    assert end == b"" and len(whole) == 2 * per_part
    assert [msgspec.json.decode(line)["n"] for line in whole] == list(range(2 * per_part))
    assert archive.stats.recovered_completed == 1 and archive.stats.recovered_aborted == 1

    # a restart in the same window continues the numbering instead of overwriting seq 1
    archive.start()
    archive.append(Channel.T, b'{"channel":"T","after":"restart"}\n', clock.time_ms())
    archive.append(Channel.Q, b'{"channel":"Q","after":"restart"}\n', clock.time_ms())
    await archive.aclose()
    found = await objects(client, bucket)
    assert object_key(PREFIX, "T", window, HOST, 2) in found
    assert q_key in found and found[t_key] != b""


@integration
async def test_outage_buffers_then_drops_past_the_budget_then_resumes(
    s3: tuple[Any, str], caplog: pytest.LogCaptureFixture
) -> None:
    client, bucket = s3
    outage = MotoS3Server()
    outage.start()
    session = outage.aio_session()
    try:
        async with open_s3_client(outage.region, outage.endpoint_url, session=session) as c2:
            clock = ManualClock(T0_MS)
            policy = RotationPolicy.from_config(30, 8192, 5 * MIB)
            archive = make_archive(
                c2, bucket, clock, policy=policy, max_buffer_bytes=64 * 1024, drop_quiet_s=0.5
            )
            archive.start()
            caplog.set_level(logging.WARNING, logger="polygon_adapters")
            outage.stop()
            accepted: list[bytes] = []
            for i in range(100):  # 100 x 1 KiB: 64 fit in the budget
                line = padded_line(Channel.T, i, clock.time_ms(), 1024)
                before = archive.stats.dropped_lines_total
                archive.append(Channel.T, line, clock.time_ms())
                if archive.stats.dropped_lines_total == before:
                    accepted.append(line)
            stats = archive.stats
            assert len(accepted) == 64
            assert stats.dropped_lines[Channel.T] == 36
            assert stats.dropped_bytes[Channel.T] == 36 * 1024
            assert stats.bytes_buffered == 64 * 1024 and stats.dropping
            await eventually(lambda: stats.retries >= 2)
            assert stats.in_outage and stats.objects_completed == 0

            clock.advance(1)
            outage.start()
            # every full object goes out; the open one waits for its rotation or the stop
            await eventually(lambda: stats.objects_completed == 7, within_s=20)
            assert stats.bytes_buffered == 8192
            clock.advance(1)
            await eventually(lambda: not stats.dropping)
            await archive.aclose()
            assert not stats.in_outage
    finally:
        outage.stop()
    found = await objects(client, bucket)
    assert b"".join(found[k] for k in data_keys(found, Channel.T)) == b"".join(accepted)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("DROPPING" in m for m in messages) == 1
    assert sum("stopped dropping: 36 lines" in m for m in messages) == 1
    assert sum("S3 reachable again" in m for m in messages) == 1


@integration
async def test_shutdown_deadline_leaves_uploads_for_recovery(moto: MotoS3Server) -> None:
    outage = MotoS3Server()
    outage.start()
    session = outage.aio_session()
    try:
        async with open_s3_client(outage.region, outage.endpoint_url, session=session) as client:
            bucket = unique_bucket()
            await client.create_bucket(Bucket=bucket)
            clock = ManualClock(T0_MS)
            archive = make_archive(client, bucket, clock)
            archive.start()
            outage.stop()
            archive.append(Channel.AM, b'{"channel":"AM"}\n', clock.time_ms())
            loop = asyncio.get_running_loop()
            started = loop.time()
            await archive.aclose(timeout_s=0.3)
            assert loop.time() - started < 2
            assert archive.stats.objects_abandoned == 1 and archive.stats.lost_lines == 1
            archive.append(Channel.AM, b'{"channel":"AM"}\n', clock.time_ms())
            assert archive.stats.dropped_lines[Channel.AM] == 1  # appended after close
    finally:
        outage.stop()


# -- a real consumer -------------------------------------------------------------------------


@integration
async def test_duckdb_reads_the_archive(s3: tuple[Any, str], tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    client, bucket = s3
    clock = ManualClock(T0_MS)
    archive = make_archive(client, bucket, clock)
    archive.start()
    for channel, line, _ in archive_lines(50, clock.time_ms()):
        archive.append(channel, line, clock.time_ms())
    await archive.aclose()
    for key, body in (await objects(client, bucket)).items():
        path = tmp_path / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    glob = str(tmp_path / PREFIX / "channel=T" / "ingest_dt=2025" / "05" / "07" / "**" / "*.ndjson")
    db = duckdb.connect()
    try:
        db.execute("SET TimeZone = 'UTC'")
        rows = db.sql(
            "SELECT symbol, p, s, c, t, q, strftime(ingestTs, '%Y-%m-%dT%H:%M:%S.%gZ'), hour, "
            f"part FROM read_json_auto('{glob}', format = 'newline_delimited', "
            "hive_partitioning = true) ORDER BY q"
        ).fetchall()
    finally:
        db.close()
    assert len(rows) == 50
    assert rows[0] == (
        "AAPL", 192, 100, [12, 37], 1746612420000, 0, iso_ms(T0_MS), 10,
        "20250507_1000-20250507_1029",
    )  # fmt: skip


# -- docs/athena.md agrees with the code -----------------------------------------------------

ATHENA_DOC = REPO / "docs" / "athena.md"
DOCUMENTED_ELEMENTS = {  # polygon-protocol.md §8 samples, plus the optional fields it lists
    "AM": b'{"ev":"AM","sym":"GTE","v":4110,"av":9470157,"op":0.4372,"vw":0.4488,"o":0.4488,'
    b'"c":0.4486,"h":0.4489,"l":0.4486,"a":0.4352,"z":685,"s":1610144640000,'
    b'"e":1610144700000,"otc":true,"dv":"4989.0","dav":"4332125.038360"}',
    "FMV": b'{"ev":"FMV","fmv":189.22,"sym":"AAPL","t":1678220098130}',
    "T": b'{"ev":"T","sym":"AAPL","i":"143541","x":4,"p":297.845,"s":40,"c":[12],'
    b'"t":1781622376036,"pt":1781622376029,"q":4938312,"z":3,"trfi":202,'
    b'"trft":1781622376036,"ds":"40.0"}',
    "Q": b'{"ev":"Q","sym":"MSFT","bx":4,"bp":114.125,"bs":100,"ax":7,"ap":114.128,"as":160,'
    b'"c":0,"i":[604],"t":1536036818784,"pt":1536036818784,"q":50385480,"z":3}',
}


def athena_tables() -> dict[str, str]:
    """The DDL of docs/athena.md by channel (from each table's LOCATION)."""
    text = ATHENA_DOC.read_text(encoding="utf-8")
    tables: dict[str, str] = {}
    for ddl in re.findall(r"```sql\n(CREATE EXTERNAL TABLE.*?)```", text, flags=re.S):
        found = re.search(r"LOCATION 's3://S3_BUCKET/S3_PREFIX/channel=(\w+)/'", ddl)
        assert found, ddl[:80]
        tables[found.group(1)] = ddl
    return tables


def test_athena_ddl_names_every_channel_with_the_codes_location_template() -> None:
    tables = athena_tables()
    assert sorted(tables) == sorted(c.value for c in Channel)
    window = window_for(T0_MS, 30)  # 2025-05-07 10:00
    for channel, ddl in tables.items():
        key = object_key("S3_PREFIX", channel, window, HOST, 1)
        hour_folder = key[: key.index("/part=") + 1]
        assert hour_folder.endswith("/ingest_dt=2025/05/07/hour=10/")  # yyyy/MM/dd and HH
        template = "s3://S3_BUCKET/" + hour_folder.replace(
            "ingest_dt=2025/05/07/hour=10/", "ingest_dt=${ingest_dt}/hour=${hour}/"
        )
        assert f"'storage.location.template'='{template}'" in ddl
        assert "'projection.ingest_dt.format'='yyyy/MM/dd'" in ddl
        assert "'projection.hour.digits'='2'" in ddl
        columns = re.findall(r"^  `?(\w+)`? [\w<>]+,?$", ddl.split("PARTITIONED BY")[0], re.M)
        lowered = [c.lower() for c in columns]
        assert len(set(lowered)) == len(lowered), f"{channel}: columns equal but for case"
        wire = msgspec.json.decode(DOCUMENTED_ELEMENTS[channel])
        missing = {"channel", "symbol", "ingestts", *(k.lower() for k in wire)} - set(lowered)
        assert not missing, f"{channel} table lacks {sorted(missing)}"
        assert "`as`" in ddl or channel != "Q"


def test_athena_doc_worked_example_is_what_the_code_writes() -> None:
    text = ATHENA_DOC.read_text(encoding="utf-8")
    [example] = re.findall(r"s3://market-archive/(\S+\.ndjson)", text)
    received_ms = 1_746_627_123_456  # 2025-05-07 14:12:03.456 UTC
    window = window_for(received_ms, 30)
    assert example == object_key("polygon/raw", "T", window, "ip-10-0-1-23", 1)
    [line] = re.findall(r'^(\{"channel":"T".*\})$', text, flags=re.M)
    raw = line.split('"ingestTs":"2025-05-07T14:12:03.456Z",', 1)[1]
    frame = decode_frame(b"[{" + raw.encode() + b"]", keep_raw=True)
    [(channel, symbol, element)] = frame.archive
    stamp = iso_ms(received_ms).encode()
    assert archive_line(channel, symbol, stamp, element) == line.encode() + b"\n"
