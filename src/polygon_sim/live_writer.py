"""The data writer of a connection to a realistic-market host (``market="realistic"``).

Every :data:`TICK_S` (or sooner when woken by a subscription or a fault) it takes the events
the host's :class:`~polygon_sim.live.LiveHost` has due, keeps those the connection
subscribes to, and sends them in frames of at most ``events_per_frame`` events, under the
``max_events`` budget, with the frame stamps and the ground truth of the flat writer.
``events_per_second`` does not pace it: the market's own clock does. An armed
out-of-order fault resends one due event with a time 1-60 s older (``AM``: the previous
minute); oversize frames are a flat-market fault only.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable

import msgspec
from websockets.exceptions import ConnectionClosed

from polygon_sim.connection import Connection
from polygon_sim.faults import HostFaults
from polygon_sim.host import Host
from polygon_sim.wire import Aggregate, Event, FairValue, encode, event_channel, wire_tuple

__all__ = ["TICK_S", "stream_live"]

TICK_S = 0.005


def _older(event: Event, rng: random.Random) -> Event:
    back = 1000 + int(rng.random() * 59_000)
    if isinstance(event, Aggregate):
        return msgspec.structs.replace(event, s=event.s - 60_000, e=event.e - 60_000)
    if isinstance(event, FairValue) and event.t > 10**15:
        return msgspec.structs.replace(event, t=event.t - back * 1_000_000)
    return msgspec.structs.replace(event, t=event.t - back)


async def stream_live(
    sim: Host,
    conn: Connection,
    take_faults: Callable[[Connection, HostFaults], Awaitable[None]],
    flush: Callable[[Connection], Awaitable[bool]],
) -> None:
    """Run the writer until the connection closes; see the module docstring."""
    assert sim.live is not None
    live, ws, truth, record = sim.live[conn.role], conn.ws, sim.truth, conn.record
    channels = sim.markets[conn.role].channels
    host_faults, epf, stamps = sim.faults.hosts[conn.role], sim.config.events_per_frame, sim.stamps
    rng, wants = random.Random(), conn.wants
    while not conn.closing:
        if host_faults.armed:
            await take_faults(conn, host_faults)
        if not (conn.wildcard or conn.explicit):
            if not await flush(conn):
                await conn.rest(None)
            continue
        due = [e for e in live.take(int(time.time() * 1000)) if wants(event_channel(e), e.sym)]
        if due and conn.stale:
            conn.stale -= 1
            due.insert(0, _older(due[0], rng))
        sent = False
        for start in range(0, len(due), epf):
            events = due[start : start + epf]
            n = sim.take_budget(len(events))
            if not n:
                break
            events = events[:n]
            counts = [0] * len(channels)
            for event in events:
                counts[channels.index(event_channel(event))] += 1
            number = stamps.stamp(events) if stamps is not None else 0
            parts, conn.pending = conn.pending, []
            parts.append(encode(events)[1:-1])
            frame = b"[" + b",".join(parts) + b"]"
            try:
                await ws.send(frame, text=True)
            except ConnectionClosed:
                sim.refund_budget(n)
                raise
            if number:
                assert stamps is not None
                stamps.sent(number)
            latest = [wire_tuple(e) for e in events] if truth.track_latest else None
            truth.delivered(record, channels, counts, len(frame), latest)
            sent = True
        if not sent:
            await flush(conn)
        await conn.rest(TICK_S)
