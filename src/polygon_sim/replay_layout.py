"""Replay's reading plan: archive keys parsed back, the range filter, the order of objects.

Pure (no I/O, no clock). The archive layout (SPEC §3, :mod:`polygon_core.rotation`) is
``{prefix}/channel=T/ingest_dt=YYYY/MM/DD/hour=HH/part=YYYYMMDD_HHMM-YYYYMMDD_HHMM/
{hostname}-seq=000001.ndjson``; :func:`parse_object_key` reads a key (or a local path
holding it, ``.gz`` allowed) back into an :class:`ArchiveObject`. A file outside the layout
(a flat folder of downloads) has no known channel or window: it is read by both hosts and
merged with everything.

Order (:func:`plan_reads`): per host, objects are cut into *chains* (one channel, writer and
window: its objects in ``seq`` order, read one after the other) and chains into *groups*
(chains whose windows overlap, merged line by line on ``ingestTs``). Groups follow each
other in window order, so at most a group's chains are open at once.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from polygon_core.events import Channel
from polygon_core.subscriptions import FeedRole

__all__ = [
    "ArchiveObject",
    "Chain",
    "TimeRange",
    "host_of",
    "parse_object_key",
    "parse_time_ms",
    "plan_reads",
]

_FOREVER_MS = 1 << 62
_KEY = re.compile(
    r"(?:^|/)channel=(?P<channel>[^/]+)/ingest_dt=(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})"
    r"/hour=(?P<h>\d{2})/part=(?P<first>\d{8}_\d{4})-(?P<last>\d{8}_\d{4})"
    r"/(?P<host>[^/]+)-seq=(?P<seq>\d{6,})\.ndjson(?:\.gz)?$"
)
_HOST_OF = {Channel.AM: FeedRole.REALTIME, Channel.FMV: FeedRole.REALTIME}


def host_of(channel: Channel) -> FeedRole:
    """The host that serves ``channel`` (AM, FMV: real-time; T, Q: delayed)."""
    return _HOST_OF.get(channel, FeedRole.DELAYED)


@dataclass(frozen=True, slots=True)
class ArchiveObject:
    """One archived object (an S3 key or a local file) and what its name says."""

    name: str
    """The S3 key or the local path."""
    channel: Channel | None
    """``None``: outside the layout (its lines say their channel)."""
    start_ms: int
    end_ms: int
    """The window ``[start_ms, end_ms)`` of ingest times (everything when unknown)."""
    writer: str = ""
    seq: int = 0
    size_bytes: int = 0


def _minute_ms(stamp: str) -> int:
    """``YYYYMMDD_HHMM`` -> epoch ms."""
    t = (int(stamp[:4]), int(stamp[4:6]), int(stamp[6:8]), int(stamp[9:11]), int(stamp[11:13]))
    return calendar.timegm((*t, 0, 0, 0, 0)) * 1000


def parse_object_key(name: str, size_bytes: int = 0) -> ArchiveObject | None:
    """An archived object from its key or path; ``None`` for what replay never reads
    (``uploading.marker``, anything not ``.ndjson``/``.ndjson.gz``)."""
    if not (name.endswith(".ndjson") or name.endswith(".ndjson.gz")):
        return None
    match = _KEY.search(name)
    if match is None or match["channel"] not in Channel.__members__:
        return ArchiveObject(name, None, 0, _FOREVER_MS, name, 0, size_bytes)
    try:
        start, end = _minute_ms(match["first"]), _minute_ms(match["last"]) + 60_000
    except ValueError:  # a month 13 and the like
        return ArchiveObject(name, None, 0, _FOREVER_MS, name, 0, size_bytes)
    if end <= start:
        return ArchiveObject(name, None, 0, _FOREVER_MS, name, 0, size_bytes)
    channel = Channel(match["channel"])
    return ArchiveObject(name, channel, start, end, match["host"], int(match["seq"]), size_bytes)


def parse_time_ms(text: str) -> int:
    """``2025-05-07T14:00``, ``2025-05-07T14:00:00.250Z``, ``2025-05-07`` (UTC unless an
    offset is given) or epoch milliseconds -> epoch ms; ``ValueError`` otherwise."""
    value = text.strip()
    if value.isdigit():
        return int(value)
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not a time: {text!r} (ISO-8601 UTC or epoch ms)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class TimeRange:
    """Ingest times ``[start_ms, end_ms)`` to replay (``None``: unbounded)."""

    start_ms: int | None = None
    end_ms: int | None = None

    def __post_init__(self) -> None:
        if self.start_ms is not None and self.end_ms is not None and self.end_ms <= self.start_ms:
            raise ValueError("the range's end must be after its start")

    def contains(self, ingest_ms: int) -> bool:
        return (self.start_ms is None or ingest_ms >= self.start_ms) and (
            self.end_ms is None or ingest_ms < self.end_ms
        )

    def overlaps(self, start_ms: int, end_ms: int) -> bool:
        """Whether a window ``[start_ms, end_ms)`` may hold a line in the range."""
        return (self.start_ms is None or end_ms > self.start_ms) and (
            self.end_ms is None or start_ms < self.end_ms
        )


@dataclass(frozen=True, slots=True)
class Chain:
    """Objects read one after the other (one channel, writer and window, by ``seq``)."""

    objects: tuple[ArchiveObject, ...]

    @property
    def start_ms(self) -> int:
        return self.objects[0].start_ms

    @property
    def end_ms(self) -> int:
        return self.objects[0].end_ms


def _channels_of(obj: ArchiveObject, channels: frozenset[Channel]) -> frozenset[Channel]:
    return channels if obj.channel is None else channels & {obj.channel}


def plan_reads(
    objects: Iterable[ArchiveObject],
    channels: Iterable[Channel] | None = None,
    time_range: TimeRange | None = None,
) -> dict[FeedRole, list[list[Chain]]]:
    """Per host, the groups of chains to merge, in order (see the module docstring).

    Objects of other channels or windows outside the range are left out; an object outside
    the layout goes to every host with a wanted channel.
    """
    wanted = frozenset(Channel if channels is None else channels)
    time_range = time_range or TimeRange()
    chains: dict[FeedRole, dict[tuple[object, ...], list[ArchiveObject]]]
    chains = {role: {} for role in FeedRole}
    for obj in objects:
        if not time_range.overlaps(obj.start_ms, obj.end_ms):
            continue
        roles = {host_of(c) for c in _channels_of(obj, wanted)}
        for role in roles:
            key = (obj.start_ms, obj.end_ms, obj.channel or "", obj.writer)
            chains[role].setdefault(key, []).append(obj)
    plan: dict[FeedRole, list[list[Chain]]] = {}
    for role, by_key in chains.items():
        ordered = [
            Chain(tuple(sorted(objs, key=lambda o: (o.seq, o.name))))
            for _key, objs in sorted(by_key.items(), key=lambda kv: _sort_key(kv[0]))
        ]
        plan[role] = _groups(ordered)
    return plan


def _sort_key(key: tuple[object, ...]) -> tuple[int, int, str, str]:
    start, end, channel, writer = key
    assert isinstance(start, int) and isinstance(end, int)
    return (start, end, str(channel), str(writer))


def _groups(chains: Sequence[Chain]) -> list[list[Chain]]:
    """Chains sorted by window start, cut where no window reaches past the next start."""
    groups: list[list[Chain]] = []
    reach = -1
    for chain in chains:
        if groups and chain.start_ms < reach:
            groups[-1].append(chain)
            reach = max(reach, chain.end_ms)
        else:
            groups.append([chain])
            reach = chain.end_ms
    return groups
