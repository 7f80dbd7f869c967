from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence

import pytest

from polygon_adapters.memory import InMemoryArchive, InMemoryLatestStore, ManualClock
from polygon_adapters.runtime import AsyncioScheduler, SystemClock
from polygon_core.codec import decode_frame
from polygon_core.errors import LeaseLost, StoreRejected
from polygon_core.events import Channel
from polygon_core.ingest import Ingest
from polygon_core.ports import LatestValue
from tests.helpers import eventually
from tests.strategies import dumps


def trade(sym: str, t: int, p: float = 1.0) -> dict:
    return {"ev": "T", "sym": sym, "p": p, "s": 1, "t": t}


def feed(ingest: Ingest, *elements: dict, receive_ms: int = 1_746_630_245_000) -> None:
    ingest.on_frame(decode_frame(dumps(list(elements)), keep_raw=ingest.keep_raw), receive_ms)


def price(store: InMemoryLatestStore, key: str) -> float:
    value = store.get(key)
    assert value is not None, key
    return json.loads(value)["price"]


@pytest.fixture
async def running():
    tasks: list[asyncio.Task[None]] = []

    def start(ingest: Ingest) -> None:
        tasks.append(asyncio.create_task(ingest.run_flush_loop()))

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_latest_per_key_reaches_the_store(running) -> None:
    store = InMemoryLatestStore()
    ingest = Ingest(store, SystemClock(), AsyncioScheduler())
    running(ingest)
    feed(ingest, trade("AAPL", 10, 1.0), trade("AAPL", 12, 2.0), trade("MSFT", 5, 3.0))
    feed(ingest, trade("AAPL", 11, 9.9))  # late
    await eventually(lambda: ingest.stats.values_written >= 2)
    assert price(store, "stock:trade:AAPL") == 2.0
    assert price(store, "stock:trade:MSFT") == 3.0
    assert ingest.buffer.late_dropped == 1
    assert ingest.events_by_channel[Channel.T] == 4
    assert ingest.newest_event_time[Channel.T] == 12


async def test_store_outage_keeps_values_and_never_rolls_back(running, caplog) -> None:
    caplog.set_level(logging.INFO, logger="polygon_core.ingest")
    store = InMemoryLatestStore()
    ingest = Ingest(
        store, SystemClock(), AsyncioScheduler(), retry_initial_s=0.005, retry_max_s=0.02
    )
    running(ingest)
    feed(ingest, trade("AAPL", 10, 1.0))
    await eventually(lambda: ingest.stats.values_written == 1)
    store.available = False
    feed(ingest, trade("AAPL", 20, 2.0), trade("MSFT", 1, 5.0))
    await eventually(lambda: ingest.stats.failed_flushes >= 3)
    feed(ingest, trade("AAPL", 15, 9.0))  # older than the value waiting to be written
    feed(ingest, trade("MSFT", 2, 6.0))
    assert price(store, "stock:trade:AAPL") == 1.0
    store.available = True
    await eventually(lambda: not ingest.stats.in_outage and len(ingest.buffer) == 0)
    assert price(store, "stock:trade:AAPL") == 2.0
    assert price(store, "stock:trade:MSFT") == 6.0
    assert ingest.stats.outages == 1
    messages = [r.getMessage() for r in caplog.records]
    assert sum("store unavailable" in m for m in messages) == 1
    assert sum("store recovered" in m for m in messages) == 1


class GatedStore(InMemoryLatestStore):
    """Blocks each write until released, recording the peak number in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.in_flight = 0
        self.peak = 0

    async def put_many(self, values: Sequence[LatestValue]) -> None:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await self.gate.wait()
            await super().put_many(values)
        finally:
            self.in_flight -= 1


async def test_one_flush_in_flight_and_a_slow_store_conflates(running) -> None:
    store = GatedStore()
    ingest = Ingest(store, SystemClock(), AsyncioScheduler(), flush_interval_s=0)
    running(ingest)
    feed(ingest, trade("AAPL", 1))
    await eventually(lambda: store.in_flight == 1)
    for t in range(2, 1002):  # the reader keeps going while the store is stuck
        feed(ingest, trade("AAPL", t, float(t)), trade(f"S{t % 10}", t))
    assert len(ingest.buffer) == 11
    store.gate.set()
    await eventually(lambda: len(ingest.buffer) == 0 and store.in_flight == 0)
    assert store.peak == 1
    assert store.batches == [1, 11]
    assert price(store, "stock:trade:AAPL") == 1001.0
    assert ingest.buffer.superseded == 2000 - 11  # writes saved by conflation


async def test_many_keys_flush_before_the_interval(running) -> None:
    store = InMemoryLatestStore()
    ingest = Ingest(
        store, SystemClock(), AsyncioScheduler(), flush_interval_s=30, flush_max_keys=50
    )
    running(ingest)
    feed(ingest, trade("FIRST", 1))
    await eventually(lambda: store.batches == [1])  # first flush: nothing before it
    feed(ingest, *[trade(f"S{i}", 1) for i in range(10)])
    await asyncio.sleep(0.05)
    assert store.batches == [1]  # below the threshold: waits for the 30 s interval
    feed(ingest, *[trade(f"S{i}", 1) for i in range(10, 60)])
    await eventually(lambda: len(store.batches) == 2)
    assert store.batches == [1, 60]


async def test_debug_writes_are_logged_with_key_and_ttl(caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="polygon_core.ingest")
    store = InMemoryLatestStore()
    ingest = Ingest(store, SystemClock(), AsyncioScheduler(), log_writes=True)
    feed(ingest, trade("AAPL", 1), {"ev": "FMV", "sym": "AAPL", "fmv": 1, "t": 1})
    assert await ingest.flush_once()
    writes = [r for r in caplog.records if getattr(r, "event", None) == "redis_write"]
    assert sorted((r.key, r.ttl) for r in writes) == [
        ("stock:fmv:AAPL", 60),
        ("stock:trade:AAPL", 60),
    ]


async def test_no_write_logging_unless_asked(caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="polygon_core.ingest")
    ingest = Ingest(InMemoryLatestStore(), SystemClock(), AsyncioScheduler())
    feed(ingest, trade("AAPL", 1))
    assert await ingest.flush_once()
    assert not [r for r in caplog.records if "redis_write" in r.getMessage()]


async def test_records_use_the_clock_for_updated_at_and_ttls() -> None:
    clock = ManualClock(time_ms=1_746_630_245_007)
    store = InMemoryLatestStore(clock)
    ingest = Ingest(store, clock, AsyncioScheduler())
    feed(ingest, {"ev": "Q", "sym": "BRK.B", "bp": 1, "bs": 2, "ap": 3, "as": 4, "t": 5})
    assert await ingest.flush_once()
    assert store.get("stock:quote:BRK.B") == (
        b'{"symbol":"BRK.B","bid":1,"bidSize":2,"ask":3,"askSize":4,"ts":5,'
        b'"updatedAt":"2025-05-07T15:04:05.007Z"}'
    )
    assert store.ttl("stock:quote:BRK.B") == 60


async def test_archive_gets_every_channel_event_with_rejects_counted() -> None:
    archive = InMemoryArchive()
    ingest = Ingest(InMemoryLatestStore(), SystemClock(), AsyncioScheduler(), archive=archive)
    assert ingest.keep_raw
    feed(
        ingest,
        trade("AAPL", 1),
        {"ev": "T", "sym": "AAPL", "p": "bad"},
        {"ev": "A", "sym": "AAPL"},
        {"ev": "status", "status": "success", "message": "x"},
        {"ev": "FMV", "sym": "AAPL", "fmv": 2, "t": 3},
        receive_ms=1_746_630_245_000,
    )
    assert [json.loads(line)["p"] for line in archive.lines[Channel.T]] == [1.0, "bad"]
    assert json.loads(archive.lines[Channel.FMV][0])["ingestTs"] == "2025-05-07T15:04:05.000Z"
    assert dict(ingest.rejects_by_reason) == {"invalid_type": 1, "unknown_ev": 1}
    assert dict(ingest.archived_by_channel) == {Channel.T: 2, Channel.FMV: 1}


async def test_stop_then_final_flush_writes_everything(running) -> None:
    store = InMemoryLatestStore()
    ingest = Ingest(store, SystemClock(), AsyncioScheduler(), flush_interval_s=60)
    running(ingest)
    feed(ingest, trade("A", 1))
    await eventually(lambda: store.batches == [1])
    feed(ingest, trade("B", 1))  # waits for the long interval
    ingest.stop()
    assert await ingest.final_flush() == 0
    assert store.get("stock:trade:B") is not None


async def test_final_flush_reports_what_could_not_be_written(caplog) -> None:
    store = InMemoryLatestStore()
    store.available = False
    ingest = Ingest(
        store, SystemClock(), AsyncioScheduler(), retry_initial_s=0.001, retry_max_s=0.001
    )
    feed(ingest, trade("A", 1), trade("B", 1))
    ingest.stop()
    assert await ingest.final_flush(attempts=2) == 2
    assert "2 latest values could not be written" in caplog.text


class RejectingStore(InMemoryLatestStore):
    async def put_many(self, values: Sequence[LatestValue]) -> None:
        raise StoreRejected("bad token")


async def test_fatal_store_errors_propagate_and_keep_the_batch() -> None:
    ingest = Ingest(RejectingStore(), SystemClock(), AsyncioScheduler())
    feed(ingest, trade("A", 1))
    with pytest.raises(StoreRejected):
        await ingest.run_flush_loop()
    assert len(ingest.buffer) == 1


class SlowStore(InMemoryLatestStore):
    """Each write takes ``delay_s``; records when each one started."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.starts: list[float] = []

    async def put_many(self, values: Sequence[LatestValue]) -> None:
        self.starts.append(asyncio.get_running_loop().time())
        await asyncio.sleep(self.delay_s)
        await super().put_many(values)


async def test_group_commit_a_slow_store_gets_back_to_back_batches(running) -> None:
    """One write in flight; the next starts as soon as the reply is in and carries all that
    arrived meanwhile (no gap stretched by the write's own duration)."""
    store = SlowStore(0.02)
    ingest = Ingest(store, SystemClock(), AsyncioScheduler())
    running(ingest)
    stop = asyncio.Event()

    async def produce() -> None:
        t = 0
        while not stop.is_set():
            t += 1
            feed(ingest, trade(f"S{t % 5}", t))
            await asyncio.sleep(0.0005)

    producer = asyncio.create_task(produce())
    await eventually(lambda: len(store.starts) >= 6, within_s=5)
    stop.set()
    await producer
    gaps = [b - a for a, b in zip(store.starts[1:], store.starts[2:], strict=False)]
    # back to back: each starts when the last reply is in, not 3 x 20 ms after it
    assert all(0.02 <= gap < 0.06 for gap in gaps), gaps
    assert all(n > 1 for n in store.batches[2:]), store.batches  # batches grew by themselves
    assert ingest.buffer.superseded > 0


async def test_light_load_writes_each_frame_on_its_own(running) -> None:
    store = SlowStore(0.0)
    ingest = Ingest(store, SystemClock(), AsyncioScheduler())
    running(ingest)
    for t in range(1, 21):
        feed(ingest, trade("A", t))
        await asyncio.sleep(0.004)
    await eventually(lambda: len(ingest.buffer) == 0)
    assert len(store.batches) == 20  # every event written on its own: fresh values


class FailSecondChunk(InMemoryLatestStore):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def put_many(self, values: Sequence[LatestValue]) -> None:
        self.calls += 1
        if self.calls == 2:
            from polygon_core.errors import StoreUnavailable

            raise StoreUnavailable("second chunk refused")
        await super().put_many(values)


async def test_a_batch_goes_out_in_chunks_and_a_failed_chunk_is_requeued() -> None:
    store = FailSecondChunk()
    ingest = Ingest(store, SystemClock(), AsyncioScheduler(), flush_chunk=10)
    feed(ingest, *[trade(f"S{i}", 1) for i in range(25)])
    assert not await ingest.flush_once()
    assert store.batches == [10] and len(ingest.buffer) == 15
    assert ingest.stats.values_written == 10
    assert await ingest.flush_once()  # the remaining 15 in two chunks
    assert store.batches == [10, 10, 5] and len(store.data) == 25
    assert ingest.stats.values_written == 25


async def test_leftovers_go_out_right_after_a_slow_reply(running) -> None:
    """What arrived during a 50 ms write is written as soon as that write returns when the
    reader has caught up: no gap stretched by the write's duration."""
    store = SlowStore(0.05)
    ingest = Ingest(store, SystemClock(), AsyncioScheduler(), reader_behind=lambda: False)
    running(ingest)
    feed(ingest, trade("A", 1))
    await eventually(lambda: len(store.starts) == 1)
    feed(ingest, trade("B", 1))  # arrives during the 50 ms write
    await eventually(lambda: len(store.starts) == 2, within_s=2)
    gap = store.starts[1] - store.starts[0]
    assert gap < 0.05 + 0.03, gap


def _many(ingest: Ingest, n: int, t: int) -> None:
    feed(ingest, *[trade(f"S{i}", t) for i in range(n)])


async def test_a_reader_behind_holds_the_next_write_for_its_share(running) -> None:
    """While input waits to be read, a write that took ``w`` is followed by at least ``3 w``
    before the next (busy fraction 0.25); once the reader has caught up the next write
    starts at once, however long the last one took."""
    behind = [True]
    store = SlowStore(0.0)
    ingest = Ingest(
        store, SystemClock(), AsyncioScheduler(), flush_max_keys=10**6, flush_chunk=10**6,
        reader_behind=lambda: behind[0],
    )  # fmt: skip
    running(ingest)
    _many(ingest, 20_000, 1)  # a big batch: its mapping takes milliseconds
    await eventually(lambda: len(store.starts) == 1)
    work = ingest.stats.last_flush_s
    assert work > 0
    feed(ingest, trade("LATE", 1))
    await eventually(lambda: len(store.starts) == 2, within_s=5)
    assert store.starts[1] - store.starts[0] >= 3 * work, (store.starts, work)

    behind[0] = False  # caught up: no budget wait
    _many(ingest, 20_000, 2)
    await eventually(lambda: len(store.starts) == 3)
    work = ingest.stats.last_flush_s
    feed(ingest, trade("LATE", 2))
    await eventually(lambda: len(store.starts) == 4, within_s=5)
    assert store.starts[3] - store.starts[2] < 3 * work, (store.starts, work)


class DownThenUp(InMemoryLatestStore):
    """Refuses writes until ``up`` is set (a store outage), then takes them at once."""

    def __init__(self) -> None:
        super().__init__()
        self.up = False
        self.starts: list[float] = []

    async def put_many(self, values: Sequence[LatestValue]) -> None:
        from polygon_core.errors import StoreUnavailable

        if not self.up:
            raise StoreUnavailable("down")
        self.starts.append(asyncio.get_running_loop().time())
        await super().put_many(values)


async def test_after_an_outage_the_busy_gap_follows_the_write_not_the_outage(running) -> None:
    """The outage's retries are not "time spent writing": once the store is back, flushes
    keep their ordinary pace while events keep coming (the gap used to be stretched from
    the whole outage, stalling writes for seconds after a Redis restart)."""
    store = DownThenUp()
    ingest = Ingest(
        store, SystemClock(), AsyncioScheduler(), retry_initial_s=0.05, retry_max_s=0.05,
    )  # fmt: skip
    running(ingest)
    stop = asyncio.Event()

    async def produce() -> None:  # the reader never goes quiet
        t = 0
        while not stop.is_set():
            t += 1
            feed(ingest, trade(f"S{t % 50}", t))
            await asyncio.sleep(0.0005)

    producer = asyncio.create_task(produce())
    await asyncio.sleep(0.4)  # an outage of 0.4 s: several failed attempts
    store.up = True
    await eventually(lambda: len(store.starts) >= 5, within_s=1.0)
    stop.set()
    await producer
    assert store.starts[4] - store.starts[0] < 0.2, store.starts


async def test_a_lone_frame_after_a_quiet_spell_is_flushed_at_once(running) -> None:
    """Leading edge: the interval only spaces flushes; a frame arriving when the last flush
    started more than one interval ago is written without waiting for it."""
    store = SlowStore(0.0)
    ingest = Ingest(store, SystemClock(), AsyncioScheduler(), flush_interval_s=0.2)
    running(ingest)
    feed(ingest, trade("A", 1))
    await eventually(lambda: len(store.starts) == 1)
    await asyncio.sleep(0.25)  # quiet for longer than the interval
    fed = asyncio.get_running_loop().time()
    feed(ingest, trade("B", 1))
    await eventually(lambda: len(store.starts) == 2)
    assert store.starts[1] - fed < 0.05, store.starts[1] - fed  # not the 200 ms interval
    feed(ingest, trade("C", 1))  # right after a flush: this one waits for the interval
    await eventually(lambda: len(store.starts) == 3, within_s=2)
    assert store.starts[2] - store.starts[1] >= 0.19


async def test_with_an_interval_a_small_batch_waits_it(running) -> None:
    store = SlowStore(0.0)
    ingest = Ingest(store, SystemClock(), AsyncioScheduler(), flush_interval_s=0.2)
    running(ingest)
    feed(ingest, trade("A", 1))
    await eventually(lambda: len(store.starts) == 1)
    feed(ingest, trade("B", 1))
    await asyncio.sleep(0.1)
    assert len(store.starts) == 1
    await eventually(lambda: len(store.starts) == 2, within_s=0.3)


class DeposedStore(InMemoryLatestStore):
    """Refuses every batch as a fenced store does once the lease is another task's."""

    def __init__(self) -> None:
        super().__init__()
        self.deposed = False
        self.seen: list[LatestValue] = []

    async def put_many(self, values: Sequence[LatestValue]) -> None:
        self.seen.extend(values)
        if self.deposed:
            raise LeaseLost("the lease is held by another task")
        await super().put_many(values)


async def test_a_deposed_task_holds_its_batch_and_writes_it_in_its_next_term(running) -> None:
    store = DeposedStore()
    ingest = Ingest(store, SystemClock(), AsyncioScheduler(), retry_initial_s=0.001)
    running(ingest)
    feed(ingest, trade("AAPL", 10, 1.0))
    await eventually(lambda: ingest.stats.values_written == 1)
    assert store.seen[-1].event_time == 10  # the event time goes with the value
    store.deposed = True
    feed(ingest, trade("AAPL", 20, 2.0), trade("MSFT", 1, 5.0))
    await eventually(lambda: ingest.held)
    feed(ingest, trade("TSLA", 3, 7.0))  # a frame still in flight at the fence
    await asyncio.sleep(0.05)
    assert len(store.seen) == 3  # one refused attempt, no retries while held
    assert len(ingest.buffer) == 3 and not ingest.stats.in_outage
    assert ingest.stats.failed_flushes == 0
    assert price(store, "stock:trade:AAPL") == 1.0
    store.deposed = False  # the lease is ours again
    assert ingest.resume() == 0
    await eventually(lambda: ingest.stats.values_written == 4)
    assert price(store, "stock:trade:AAPL") == 2.0 and price(store, "stock:trade:TSLA") == 7.0
    assert not ingest.held and ingest.stats.held_expired == 0
    assert all(v.strictly_newer for v in store.seen[3:])  # held: only over older records
    feed(ingest, trade("AAPL", 30, 3.0))
    await eventually(lambda: ingest.stats.values_written == 5)
    assert not store.seen[-1].strictly_newer  # the new term's own values: as always


async def test_values_held_longer_than_their_ttl_are_dropped_at_the_next_term(running) -> None:
    """A value that would have expired by the next term is not written with a fresh TTL;
    one of a channel with a longer TTL is (trades live 60 s, minute bars 120 s)."""
    clock = ManualClock()
    store = InMemoryLatestStore()
    ingest = Ingest(store, clock, AsyncioScheduler())
    ingest.hold()
    feed(ingest, trade("AAPL", 10, 1.0))
    bar = {"ev": "AM", "sym": "MSFT", "v": 4110, "av": 9470157, "op": 0.4372, "vw": 0.4488}
    bar |= {"o": 0.4488, "c": 0.4486, "h": 0.4489, "l": 0.4486, "a": 0.4352, "z": 685}
    feed(ingest, bar | {"s": 1610144640000, "e": 1610144700000})
    running(ingest)
    await asyncio.sleep(0.02)
    assert store.data == {} and len(ingest.buffer) == 2  # held: nothing written
    clock.advance(90.0)
    assert ingest.resume() == 1
    await eventually(lambda: ingest.stats.values_written == 1)
    assert list(store.data) == ["stock:agg1m:MSFT"] and ingest.stats.held_expired == 1


async def test_a_standby_at_shutdown_reports_its_held_values_without_failing(caplog) -> None:
    store = DeposedStore()
    store.deposed = True
    ingest = Ingest(store, SystemClock(), AsyncioScheduler())
    feed(ingest, trade("AAPL", 10, 1.0))
    assert await ingest.flush_once() and ingest.held
    ingest.stop()
    assert await ingest.final_flush() == 0
    assert len(store.seen) == 1  # no attempt while held
    assert "standby; 1 values held from the last term not written" in caplog.text
