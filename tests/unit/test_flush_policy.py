"""The flush loop's policy, with plain numbers (no event loop)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polygon_core.flush_policy import FlushPolicy


def test_group_commit_by_default_no_interval_holds_a_write() -> None:
    policy = FlushPolicy()
    policy.started(10.0)
    policy.finished(10.004, 0.004)
    assert policy.interval_wait_s(10.004, 1) == 0.0


def test_the_budget_gap_follows_the_write() -> None:
    """The gap (which holds only while the reader is behind) is 3x the write at 0.25."""
    policy = FlushPolicy(busy_fraction=0.25)
    policy.started(10.0)
    policy.finished(10.002, 0.002)
    assert policy.in_budget_gap(10.0079)
    assert not policy.in_budget_gap(10.0081)


def test_min_interval_spaces_starts_with_a_leading_edge() -> None:
    policy = FlushPolicy(min_interval_s=1.0)
    assert policy.interval_wait_s(5.0, 1) == 0.0  # never flushed: at once
    policy.started(5.0)
    policy.finished(5.01, 0.001)
    assert policy.interval_wait_s(5.2, 1) == pytest.approx(0.8)
    assert policy.interval_wait_s(7.0, 1) == 0.0  # a quiet spell: the next goes at once


def test_many_pending_keys_override_the_interval() -> None:
    policy = FlushPolicy(min_interval_s=30.0, max_keys=100)
    policy.started(0.0)
    assert policy.interval_wait_s(1.0, 99) > 0
    assert policy.interval_wait_s(1.0, 100) == 0.0


@pytest.mark.parametrize(
    "kwargs", [{"min_interval_s": -1}, {"max_keys": 0}, {"busy_fraction": 0}, {"busy_fraction": 2}]
)
def test_arguments_are_checked(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        FlushPolicy(**kwargs)  # type: ignore[arg-type]


@given(
    works=st.lists(st.floats(0, 0.05), min_size=1, max_size=50),
    fraction=st.floats(0.05, 1.0),
)
def test_a_reader_that_stays_behind_gets_its_share(works: list[float], fraction: float) -> None:
    """Writing as soon as the policy allows, with the reader always behind, the flushes'
    own work is at most ``fraction`` of the elapsed time (writes take no time otherwise)."""
    policy = FlushPolicy(busy_fraction=fraction)
    now, spent = 0.0, 0.0
    for work in works:
        while policy.in_budget_gap(now):
            now += 0.0001
        policy.started(now)
        now += work
        spent += work
        policy.finished(now, work)
    while policy.in_budget_gap(now):  # the gap after the last write belongs to it
        now += 0.0001
    assert spent <= fraction * now + 1e-9
