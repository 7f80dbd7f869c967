"""Replay's pacing policy and the subscription settle, driven by plain numbers."""

from __future__ import annotations

import math

import pytest

from polygon_sim.replay_pacing import ReplayPacer, SettlePolicy

T0 = 1_746_627_123_456


def test_recorded_pace() -> None:
    pacer = ReplayPacer(1.0)
    assert pacer.due_until_ms(100.0) == math.inf  # nothing anchored: the first is due
    assert pacer.wait_s(T0, 100.0) == 0.0
    assert pacer.wait_s(T0 + 2500, 100.0) == pytest.approx(2.5)
    assert pacer.wait_s(T0 + 2500, 101.0) == pytest.approx(1.5)
    assert pacer.wait_s(T0 + 2500, 103.0) == 0.0  # late: due at once
    assert pacer.due_until_ms(101.0) == pytest.approx(T0 + 1000)


def test_n_times_faster_and_unpaced() -> None:
    fast = ReplayPacer(10.0)
    fast.anchor(T0, 5.0)
    fast.anchor(T0 + 99_000, 6.0)  # only the first anchor counts
    assert fast.due_s(T0 + 60_000) == pytest.approx(11.0)
    assert fast.due_until_ms(6.0) == pytest.approx(T0 + 10_000)
    unpaced = ReplayPacer(0)
    assert unpaced.wait_s(T0 + 10**9, 0.0) == 0.0 and unpaced.due_until_ms(0.0) == math.inf


def test_both_hosts_keep_their_recorded_offsets() -> None:
    pacer = ReplayPacer(2.0)
    assert pacer.wait_s(T0 + 1000, 50.0) == 0.0  # the delayed host sends first
    assert pacer.wait_s(T0 + 5000, 50.0) == pytest.approx(2.0)
    assert pacer.wait_s(T0, 50.5) == 0.0  # a real-time event recorded earlier: overdue


@pytest.mark.parametrize("speed", [-1.0, math.inf, math.nan])
def test_bad_speeds(speed) -> None:
    with pytest.raises(ValueError):
        ReplayPacer(speed)


def test_the_stream_waits_for_subscriptions_to_settle() -> None:
    settle = SettlePolicy(0.5)
    assert settle.wait_s(10.0) is None  # nothing subscribed yet
    settle.subscribed(10.0)
    assert settle.wait_s(10.2) == pytest.approx(0.3)
    settle.subscribed(10.4)  # another batch
    assert settle.wait_s(10.8) == pytest.approx(0.1)
    assert settle.wait_s(10.9) == 0.0
    settle.subscribed(20.0)  # settled for good
    assert settle.wait_s(20.0) == 0.0
    assert SettlePolicy(0).wait_s(0.0) is None
    with pytest.raises(ValueError):
        SettlePolicy(-1)
