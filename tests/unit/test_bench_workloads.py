"""The benchmark's workload table: every row gets the size its kind asks for."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from bench.context import RunContext, Snapshot
from bench.workloads import FULL, LATENCY_RATES, LATENCY_SYMBOLS, QUICK, Sizes, workloads


@pytest.mark.parametrize("sizes", [FULL, QUICK], ids=["full", "quick"])
def test_throughput_rows_get_the_throughput_size(sizes: Sizes) -> None:
    rows = {w.key: w for w in workloads(sizes)}
    for key in ("feed", "1", "2", "4", "5"):
        assert rows[key].events == sizes.events, key
        assert not rows[key].paced, key
    assert rows["cmp"].events == sizes.comparator_events
    for key, (rate, _) in LATENCY_RATES.items():
        for row in (rows[key], rows[f"ref-{key}"]):
            assert row.events == int(rate * sizes.latency_s), row.key
            assert row.rate == rate, row.key


def test_events_option_reaches_every_throughput_row() -> None:
    """``--events N`` with N unlike any latency run's count (the old loop variable leak gave
    ``feed`` and ``1`` the last latency run's count)."""
    sizes = dataclasses.replace(QUICK, events=12_345)
    rows = {w.key: w for w in workloads(sizes)}
    assert rows["feed"].events == rows["1"].events == 12_345


@pytest.mark.parametrize("sizes", [FULL, QUICK], ids=["full", "quick"])
def test_the_realistic_day_compresses_open_to_close_into_day_s(sizes: Sizes) -> None:
    rows = {w.key: w for w in workloads(sizes)}
    ref, day = rows["ref-day"], rows["day"]
    assert (ref.client, day.client) == ("reference", "sink")
    for w in (ref, day):
        assert w.market == "realistic" and w.session == "open" and w.paced
        assert w.speed * sizes.day_s == pytest.approx(6.5 * 3600)
        assert w.number == "day"
        per_host = w.per_host
        assert sum(per_host.values()) == w.events
        assert per_host["realtime"] == int(0.93 * LATENCY_SYMBOLS * sizes.day_s)  # FMV 1/s
        # the day carries 28,800 midday-seconds of trades and quotes (open 4x->1.5x over
        # 30 min, midday 5.5 h, close 1.5x->3x over 30 min), compressed by the speed
        day_volume = sizes.day_rate * 28_800 / w.speed
        assert per_host["delayed"] == pytest.approx(0.93 * day_volume, rel=1e-3)
    assert rows["1"].per_host == {"realtime": sizes.events // 2, "delayed": sizes.events // 2}


def test_a_window_that_missed_the_run_fails_the_run(tmp_path) -> None:
    """The window opens at the first write seen: if the work was already over, no Redis
    command falls in it, and the run fails instead of reporting an empty window's figures
    (a CI run once printed 15.6 million events/s at 0 µs/event)."""
    w = next(w for w in workloads(QUICK) if w.key == "1")
    snap = Snapshot(1.0, 2.0, {}, 3.0, 0.5, {"set": 235, "info": 1}, 10)
    with contextlib.ExitStack() as stack:
        run = RunContext(w, tmp_path, stack)
        run.account(
            snap, dataclasses.replace(snap, t=1.001, commands={"set": 235, "info": 2}, sent=11)
        )
        assert not run.result.ok and "missed the run" in run.result.problems[0]
        run = RunContext(w, tmp_path, stack)
        run.account(
            snap, dataclasses.replace(snap, t=1.2, commands={"set": 900, "info": 2}, sent=11)
        )
        assert run.result.ok and run.result.redis_commands == 665
