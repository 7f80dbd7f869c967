"""The benchmark's workload table: every row gets the size its kind asks for."""

from __future__ import annotations

import dataclasses

import pytest
from bench.workloads import FULL, LATENCY_RATES, QUICK, Sizes, workloads


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
