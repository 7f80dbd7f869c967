"""Where replay reads: an S3 archive (aiobotocore) or a local folder, and each host's
stream of archived events in recorded order.

:class:`FolderArchive` reads a folder of downloaded objects (``aws s3 sync`` or ``cp
--recursive`` keep the layout; a flat folder works too, see :mod:`.replay_layout`) or one
file. :class:`S3Archive` lists ``s3://bucket/prefix`` per channel, from the first day of the
range (keys sort by time) up to its end, and streams each object. Objects are read in
chunks of :data:`CHUNK_BYTES`, gzipped or not.

:class:`HostStream` runs one host's plan (:func:`~.replay_layout.plan_reads`) in a
background task: it merges each group's chains on ``ingestTs`` (ties: chain order, so one
channel's lines keep their archive order), filters by range, channel and symbol, and queues
batches of events, a few ahead of the sender. Unusable lines are counted, never sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from polygon_core.events import Channel
from polygon_core.rotation import channel_prefix
from polygon_core.timestamps import iso_ms
from polygon_sim.replay_layout import ArchiveObject, Chain, TimeRange, parse_object_key
from polygon_sim.replay_lines import LineSplitter, ReplayEvent, parse_line

__all__ = ["CHUNK_BYTES", "Archive", "FolderArchive", "HostStream", "S3Archive", "StreamCounts"]

logger = logging.getLogger(__name__)
CHUNK_BYTES = 1 << 20
BATCH_EVENTS = 2048
QUEUED_BATCHES = 8


class Archive(Protocol):
    """What replay reads: a listing and each object's bytes."""

    async def list_objects(
        self, channels: Collection[Channel], time_range: TimeRange
    ) -> list[ArchiveObject]: ...

    def read(self, obj: ArchiveObject) -> AsyncIterator[bytes]: ...


class FolderArchive:
    """A local folder of archived objects (or one file)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def list_objects(
        self, channels: Collection[Channel], time_range: TimeRange
    ) -> list[ArchiveObject]:
        return await asyncio.to_thread(self._list)

    def _list(self) -> list[ArchiveObject]:
        if self.root.is_file():
            found = parse_object_key(str(self.root), self.root.stat().st_size)
            return [] if found is None else [found]
        if not self.root.is_dir():
            raise FileNotFoundError(f"no such file or folder: {self.root}")
        objects = []
        for path in sorted(self.root.rglob("*")):
            if path.is_file():
                name = path.relative_to(self.root).as_posix()
                found = parse_object_key(name, path.stat().st_size)
                if found is not None:
                    objects.append(found)
        return objects

    async def read(self, obj: ArchiveObject) -> AsyncIterator[bytes]:
        path = Path(obj.name)
        path = path if path.is_absolute() or self.root.is_file() else self.root / path
        handle: BinaryIO = await asyncio.to_thread(path.open, "rb")
        try:
            while chunk := await asyncio.to_thread(handle.read, CHUNK_BYTES):
                yield chunk
        finally:
            handle.close()


class S3Archive:
    """``s3://bucket/prefix`` through an aiobotocore client (the caller owns the client)."""

    def __init__(self, client: Any, bucket: str, prefix: str) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    async def list_objects(
        self, channels: Collection[Channel], time_range: TimeRange
    ) -> list[ArchiveObject]:
        objects: list[ArchiveObject] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for channel in channels:
            base = channel_prefix(self.prefix, channel.value)
            params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": base}
            if time_range.start_ms is not None:  # windows never cross a day: its folder
                day = iso_ms(time_range.start_ms)[:10].replace("-", "/")
                params["StartAfter"] = f"{base}ingest_dt={day}"
            async for page in paginator.paginate(**params):
                for item in page.get("Contents", ()):
                    found = parse_object_key(str(item["Key"]), int(item.get("Size", 0)))
                    if found is None:
                        continue
                    if time_range.end_ms is not None and found.start_ms >= time_range.end_ms:
                        if found.channel is not None:  # keys sort by window: the rest is later
                            break
                    objects.append(found)
                else:
                    continue
                break
        return objects

    async def read(self, obj: ArchiveObject) -> AsyncIterator[bytes]:
        answer = await self.client.get_object(Bucket=self.bucket, Key=obj.name)
        body = answer["Body"]
        try:
            while chunk := await body.read(CHUNK_BYTES):
                yield chunk
        finally:
            body.close()


@dataclass(slots=True)
class StreamCounts:
    """What one host's stream read."""

    objects: int = 0
    lines: int = 0
    events: int = 0
    """Queued for sending (in the range, channel and symbols)."""
    skipped: int = 0
    """Outside the range, channels or symbols."""
    rejected: int = 0
    """Unusable lines (not an archive line)."""
    bad_objects: list[str] = field(default_factory=list)
    """Objects not read to their end (logged)."""
    failed: bool = False
    """Reading stopped early (logged): the stream ended before the plan's end."""


class HostStream:
    """One host's archived events in order, read ahead in a background task."""

    def __init__(
        self,
        archive: Archive,
        groups: Sequence[Sequence[Chain]],
        channels: Collection[Channel],
        time_range: TimeRange,
        symbols: Collection[str] | None = None,
        batch_events: int = BATCH_EVENTS,
    ) -> None:
        self._archive = archive
        self._groups = groups
        self._channels = frozenset(channels)
        self._range = time_range
        self._symbols = None if symbols is None else frozenset(symbols)
        self._batch = batch_events
        self.counts = StreamCounts()
        self._queue: asyncio.Queue[list[ReplayEvent] | None] = asyncio.Queue(QUEUED_BATCHES)
        self._head: deque[ReplayEvent] = deque()
        self._task: asyncio.Task[None] | None = None
        self.exhausted = False
        """Every event was taken (the stream is over)."""

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._fill(), name="replay-reader")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def peek(self) -> ReplayEvent | None:
        """The next event (``None``: the stream is over), waiting for the reader if needed."""
        while not self._head:
            if self.exhausted:
                return None
            self.start()
            batch = await self._queue.get()
            if batch is None:
                self.exhausted = True
                return None
            self._head.extend(batch)
        return self._head[0]

    def take(self, until_ms: float, limit: int) -> list[ReplayEvent]:
        """Up to ``limit`` events already read ahead, recorded at or before ``until_ms``."""
        head, out = self._head, list[ReplayEvent]()
        while head and len(out) < limit and head[0].ingest_ms <= until_ms:
            out.append(head.popleft())
        return out

    def unread(self, events: Sequence[ReplayEvent]) -> None:
        """Put events back in front (their frame was not sent)."""
        self._head.extendleft(reversed(events))
        self.exhausted = False if events else self.exhausted

    async def _fill(self) -> None:
        try:
            for group in self._groups:
                async for batch in self._merged(group):
                    await self._queue.put(batch)
        except Exception:
            self.counts.failed = True
            logger.exception("replay: reading the archive failed; the stream ends here")
        finally:
            await self._queue.put(None)

    async def _merged(self, group: Sequence[Chain]) -> AsyncIterator[list[ReplayEvent]]:
        """The chains' events merged on ingest time (ties: the earlier chain first)."""
        readers = [self._chain_events(chain) for chain in group]
        heads: list[deque[ReplayEvent]] = [deque() for _ in readers]
        heap: list[tuple[int, int]] = []
        for i, reader in enumerate(readers):
            if await _refill(reader, heads[i]):
                heap.append((heads[i][0].ingest_ms, i))
        heapq.heapify(heap)
        out: list[ReplayEvent] = []
        while heap:
            _ms, i = heapq.heappop(heap)
            bound = heap[0] if heap else (math.inf, -1)
            head = heads[i]
            while head:
                ms = head[0].ingest_ms
                if ms > bound[0] or (ms == bound[0] and i > bound[1]):
                    break
                out.append(head.popleft())
            if len(out) >= self._batch:
                yield out
                out = []
            if head or await _refill(readers[i], head):
                heapq.heappush(heap, (head[0].ingest_ms, i))
        if out:
            yield out

    async def _chain_events(self, chain: Chain) -> AsyncIterator[list[ReplayEvent]]:
        counts, contains = self.counts, self._range.contains
        channels, symbols = self._channels, self._symbols
        for obj in chain.objects:
            counts.objects += 1
            splitter = LineSplitter()
            try:
                async for chunk in self._archive.read(obj):
                    lines = splitter.feed(chunk)
                    if lines:
                        yield self._events(lines, contains, channels, symbols)
                yield self._events(splitter.finish(), contains, channels, symbols)
            except (ValueError, OSError, BotoCoreError, ClientError) as exc:
                # Bad gzip data, a vanished object, S3 refusing: the object's rest is skipped.
                logger.error("replay: %s: %s; its remaining lines are skipped", obj.name, exc)
                counts.bad_objects.append(obj.name)

    def _events(
        self,
        lines: list[bytes],
        contains: Any,
        channels: frozenset[Channel],
        symbols: frozenset[str] | None,
    ) -> list[ReplayEvent]:
        counts = self.counts
        counts.lines += len(lines)
        out = []
        for line in lines:
            event = parse_line(line)
            if event is None:
                counts.rejected += 1
            elif (
                contains(event.ingest_ms)
                and event.channel in channels
                and (symbols is None or event.symbol in symbols)
            ):
                out.append(event)
            else:
                counts.skipped += 1
        counts.events += len(out)
        return out


async def _refill(reader: AsyncIterator[list[ReplayEvent]], head: deque[ReplayEvent]) -> bool:
    """Read the next non-empty batch into ``head``; ``False`` once the reader is done."""
    async for batch in reader:
        if batch:
            head.extend(batch)
            return True
    return False
