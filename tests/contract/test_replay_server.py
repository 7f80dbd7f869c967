"""Replay's server over real loopback sockets: plain ``websockets`` clients against an archive
folder, in recorded order, paced, filtered; and the ``polygon-sink replay`` command."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from polygon_adapters.runtime import SystemClock
from polygon_core.archive_lines import archive_line
from polygon_core.events import Channel
from polygon_core.rotation import object_key, window_for
from polygon_core.timestamps import iso_ms_bytes
from polygon_runner.__main__ import main as polygon_sink
from polygon_sim.config import SimulatorConfig
from polygon_sim.replay import Replay, ReplayOptions
from polygon_sim.replay_layout import TimeRange
from polygon_sim.replay_source import FolderArchive
from tests.contract.test_simulator import CONNECTED, auth, recv_json, session, subscribe

pytestmark = pytest.mark.integration
KEY = "sim-key-4d1f"
T0 = 1_746_626_400_000  # 2025-05-07T14:00:00Z


def element(channel: Channel, symbol: str, n: int) -> bytes:
    field = "s" if channel is Channel.AM else "t"
    return b'{"ev":"%s","sym":"%s","%s":%d,"n":%d}' % (
        channel.value.encode(),
        symbol.encode(),
        field.encode(),
        T0 + n,
        n,
    )


def write(root: Path, channel: Channel, items: list[tuple[int, str, int]]) -> list[bytes]:
    """Archive ``(ingest ms offset, symbol, n)`` items as one object; their wire elements."""
    key = object_key("p", channel.value, window_for(T0, 30), "rec", 1)
    raws = [element(channel, sym, n) for _at, sym, n in items]
    body = b"".join(
        archive_line(channel, sym, iso_ms_bytes(T0 + at), raw)
        for (at, sym, _n), raw in zip(items, raws, strict=True)
    )
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return raws


def replay(root: Path, **options) -> Replay:
    options.setdefault("speed", 0)
    options.setdefault("settle_s", 0.05)
    config = SimulatorConfig(api_key=KEY, rest=False)
    return Replay(FolderArchive(root), ReplayOptions(**options), SystemClock(), config)


async def data_until(ws, n: int) -> list[dict]:
    """Data elements (statuses left out) until ``n`` have come."""
    out: list[dict] = []
    while len(out) < n:
        out += [e for e in await recv_json(ws) if e["ev"] != "status"]
    return out


async def test_events_come_in_recorded_order_to_their_subscribers(tmp_path) -> None:
    trades = write(tmp_path, Channel.T, [(0, "AAPL", 1), (2, "BRK.B", 3), (4, "AAPL", 5)])
    quotes = write(tmp_path, Channel.Q, [(1, "AAPL", 2), (3, "MSFT", 4)])
    write(tmp_path, Channel.FMV, [(0, "AAPL", 6), (1, "MSFT", 7)])
    async with replay(tmp_path) as rep:
        async with session(rep.server.delayed_url) as ws:
            await ws.send(subscribe("T.*,Q.AAPL"))
            acks = await recv_json(ws)
            assert [a["message"] for a in acks] == ["subscribed to: T.*", "subscribed to: Q.AAPL"]
            frames = []
            while sum(f.count(b'"ev"') for f in frames) < 4:
                message = await asyncio.wait_for(ws.recv(), 5)
                frames.append(message.encode())
            body = b"[" + b",".join([trades[0], quotes[0], trades[1], trades[2]]) + b"]"
            assert b"".join(frames) == body  # byte for byte, in recorded order, one frame
        async with session(rep.server.realtime_url) as ws:
            await ws.send(subscribe("FMV.MSFT"))
            await recv_json(ws)  # the ack
            assert [e["n"] for e in await data_until(ws, 1)] == [7]
            await asyncio.wait_for(rep.wait_done(), 5)
        assert rep.writer is not None
        assert rep.writer.not_subscribed == {"realtime": 1, "delayed": 1}


async def test_the_stream_waits_for_batched_subscriptions_to_settle(tmp_path) -> None:
    write(tmp_path, Channel.T, [(0, "A", 1), (1, "B", 2), (2, "C", 3)])
    async with replay(tmp_path, settle_s=0.3) as rep, session(rep.server.delayed_url) as ws:
        await ws.send(subscribe("T.A"))
        await asyncio.sleep(0.1)
        await ws.send(subscribe("T.C"))
        assert [e["n"] for e in await data_until(ws, 2)] == [1, 3]
        assert rep.writer is not None and rep.writer.not_subscribed["delayed"] == 1


async def test_range_channels_and_symbols_filter_what_is_served(tmp_path) -> None:
    write(tmp_path, Channel.T, [(0, "A", 1), (10, "A", 2), (20, "B", 3), (30, "A", 4)])
    write(tmp_path, Channel.Q, [(10, "A", 5)])
    span = TimeRange(T0 + 10, T0 + 30)
    async with (
        replay(tmp_path, time_range=span, channels=(Channel.T,), symbols=("A",)) as rep,
        session(rep.server.delayed_url) as ws,
    ):
        await ws.send(subscribe("T.*,Q.*"))
        assert [e["n"] for e in await data_until(ws, 1)] == [2]
        await asyncio.wait_for(rep.wait_done(), 5)
        assert rep.writer is not None and rep.writer.sent["delayed"] == 1


async def test_recorded_pace_n_times_faster(tmp_path) -> None:
    write(tmp_path, Channel.T, [(0, "A", 1), (1000, "A", 2), (2000, "A", 3)])
    async with replay(tmp_path, speed=10) as rep, session(rep.server.delayed_url) as ws:
        await ws.send(subscribe("T.A"))
        await recv_json(ws)
        arrived = []
        for _ in range(3):
            await data_until(ws, 1)
            arrived.append(time.monotonic())
    gaps = [b - a for a, b in zip(arrived, arrived[1:], strict=False)]
    assert all(0.07 < gap < 0.6 for gap in gaps), gaps  # recorded 1 s apart, 10x faster


async def test_the_replay_command(tmp_path) -> None:
    write(tmp_path, Channel.AM, [(0, "AAPL", 1), (5, "MSFT", 2)])
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "polygon_runner", "replay", str(tmp_path), "--fast",
        "--exit-when-done", "--api-key", KEY, "--no-rest", "--settle", "0.05",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        first = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert first.startswith("realtime (AM, FMV): ws://127.0.0.1:"), first
        url = first.split(": ", 1)[1].strip()
        async with connect(url, max_size=None) as ws:
            assert await ws.recv() == CONNECTED
            await ws.send(auth(KEY))
            await ws.recv()
            await ws.send(subscribe("AM.*"))
            await recv_json(ws)
            assert [e["n"] for e in await data_until(ws, 2)] == [1, 2]
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        out = (await proc.stdout.read()).decode()
        assert "replay done" in out and "sent 2 events" in out, out
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_the_command_names_itself_and_refuses_bad_options(tmp_path, capsys) -> None:
    def run(*args: str) -> tuple[int, str]:
        try:
            code = polygon_sink(["replay", *args])
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    code, out = run("--help")
    assert code == 0 and out.startswith("usage: polygon-sink replay")
    code, out = run(str(tmp_path), "--from", "2025-05-07T15:00", "--to", "2025-05-07T14:00")
    assert code == 2 and "--from/--to" in out
    code, out = run(str(tmp_path), "--channels", "T,X")
    assert code == 2 and "channels are AM, FMV, T, Q" in out
    code, out = run(str(tmp_path), "--speed", "-2")
    assert code == 2 and "speed is a number >= 0" in out
    code, out = run(str(tmp_path / "nope"), "--no-rest")
    assert code == 2 and "no such file or folder" in out
