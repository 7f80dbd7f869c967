"""The liveness policy with plain numbers: ping when idle, dead after the idle timeout, and a
frame (any change of the reader's counter) or a pong counts as proof of life."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polygon_core.backoff import DisconnectReason, ReconnectPolicy
from polygon_core.liveness import LivenessAction, LivenessPolicy

WAIT, PING, DEAD = LivenessAction.WAIT, LivenessAction.PING, LivenessAction.DEAD


def run(policy: LivenessPolicy, until_s: float, frames_at: set[int] = frozenset()) -> list:
    """Poll every tick from 0 to ``until_s``; the counter moves at the ticks in
    ``frames_at``; returns (tick, action) for every action but WAIT, sending pings."""
    frames = 0
    seen = []
    tick = 0
    while tick * policy.tick_s <= until_s:
        now = tick * policy.tick_s
        if tick in frames_at:
            frames += 3
        action = policy.poll(now, frames)
        if action is PING:
            policy.on_ping_sent()
        if action is not WAIT:
            seen.append((tick, action))
        if action is DEAD:
            break
        tick += 1
    return seen


def test_defaults_and_tick() -> None:
    p = LivenessPolicy()
    assert (p.idle_timeout_s, p.dead_after_s, p.ping_after_s, p.tick_s) == (10.0, 8.0, 4.0, 0.25)
    assert LivenessPolicy(1.0).tick_s == 0.025
    assert LivenessPolicy(0.01).tick_s == 0.005


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_rejects_a_timeout_that_is_not_positive_and_finite(bad: float) -> None:
    with pytest.raises(ValueError, match="idle timeout"):
        LivenessPolicy(bad)


def test_silent_connection_pings_at_40_and_is_dead_at_80_percent_of_the_timeout() -> None:
    p = LivenessPolicy(10.0)
    p.start(0.0, 0)
    assert run(p, 30.0) == [(16, PING), (32, DEAD)]  # 4 s and 8 s at 0.25 s ticks
    assert p.silent_s == 8.0


def test_busy_feed_is_never_pinged_nor_cut() -> None:
    p = LivenessPolicy(10.0)
    p.start(0.0, 0)
    assert run(p, 120.0, frames_at=set(range(1, 1000))) == []


def test_a_frame_resets_the_silence_to_the_sample_before_it() -> None:
    p = LivenessPolicy(10.0)
    p.start(0.0, 0)
    # frames seen at tick 12 (3 s): they came after tick 11 (2.75 s), so dead at 10.75 s
    assert run(p, 30.0, frames_at={12}) == [(27, PING), (43, DEAD)]


def test_dead_after_at_most_80_percent_of_the_timeout_of_true_silence() -> None:
    p = LivenessPolicy(5.0)
    p.start(100.0, 7)
    assert p.poll(100.0 + p.tick_s, 8) is WAIT  # a frame arrived at some time in the tick
    last_frame_at = 100.0 + p.tick_s  # the latest it can have come
    now = last_frame_at
    while p.poll(now, 8) is not DEAD:
        now += p.tick_s
    assert 4.0 - p.tick_s <= now - last_frame_at <= 4.0 + 1e-9  # 80 % of 5 s


def test_a_pong_is_proof_of_life_and_a_quiet_feed_is_pinged_again() -> None:
    p = LivenessPolicy(10.0)
    p.start(0.0, 0)
    pings = []
    now = 0.0
    for tick in range(1, 400):  # 100 s of a quiet market whose pongs come a tick later
        if pings and pings[-1] == tick - 1:
            p.on_pong()
        now = tick * p.tick_s
        action = p.poll(now, 0)
        assert action is not DEAD
        if action is PING:
            p.on_ping_sent()
            pings.append(tick)
    # one every 4 s: a pong seen at a tick counts as life at the tick before (the ping's)
    assert pings == list(range(16, 400, 16))


def test_one_ping_per_silence_and_no_pong_means_dead() -> None:
    p = LivenessPolicy(10.0)
    p.start(0.0, 0)
    assert [a for _, a in run(p, 60.0)].count(PING) == 1


def test_a_stall_of_the_watchdog_is_not_counted_as_silence() -> None:
    """The event loop was busy for 9 s (the reader could not read either): not dead; the
    silence goes on counting from there."""
    p = LivenessPolicy(10.0)
    p.start(0.0, 0)
    assert p.poll(0.25, 0) is WAIT
    assert p.poll(9.25, 0) is WAIT  # 9 s without a poll: only one tick of it counts
    assert p.silent_s == 0.5
    assert p.poll(12.75, 0) is WAIT  # 14 ticks of 0.25 s would be 3.5 s, but this is a stall
    now = 12.75
    while p.poll(now + 0.25, 0) is not DEAD:
        now += 0.25
        assert now < 40
    assert p.silent_s == 8.0


def test_start_forgets_the_previous_connection() -> None:
    p = LivenessPolicy(2.5)
    p.start(0.0, 0)
    assert run(p, 10.0)[-1][1] is DEAD
    p.start(50.0, 99)  # a new connection: its own silence, from 50 s
    seen = []
    for tick in range(1, 100):
        action = p.poll(50.0 + tick * p.tick_s, 99)
        if action is PING:
            p.on_ping_sent()
        if action is not WAIT:
            seen.append((tick * p.tick_s, action))
        if action is DEAD:
            break
    assert seen == [(1.0, PING), (2.0, DEAD)]  # one ping only


@given(
    timeout=st.floats(0.5, 60.0),
    gaps=st.lists(st.floats(0.0, 0.35), min_size=1, max_size=200),
)
def test_frames_closer_than_the_ping_delay_never_ping_or_cut(
    timeout: float, gaps: list[float]
) -> None:
    """Frames at most 35 % of the timeout apart (any pongs lost): always WAIT."""
    p = LivenessPolicy(timeout)
    p.start(0.0, 0)
    now, frames, next_frame = 0.0, 0, 0.0
    for gap in gaps:
        next_frame += gap * timeout
        while now + p.tick_s < next_frame:
            now += p.tick_s
            assert p.poll(now, frames) is WAIT
        frames += 1
        now += p.tick_s
        assert p.poll(now, frames) is WAIT


# -- the reconnect after an idle timeout -------------------------------------------------------


def test_idle_timeout_of_a_healthy_connection_reconnects_at_once_then_backs_off() -> None:
    r = ReconnectPolicy(random=lambda: 0.0)
    r.on_connected(0.0)
    r.on_data(1.0)
    assert r.next_delay(DisconnectReason.IDLE_TIMEOUT, 20.0) == 0.0
    assert (r.attempt, r.retry_at_s) == (1, 20.0)
    r.on_connected(20.0)
    assert r.next_delay(DisconnectReason.IDLE_TIMEOUT, 30.0) == 1.0  # repeated: the backoff
    r.on_connected(31.0)
    assert r.next_delay(DisconnectReason.IDLE_TIMEOUT, 41.0) == 2.0
    r.on_connected(43.0)
    r.on_data(43.5)
    r.on_data(80.0)  # healthy for 30 s: the backoff resets
    assert r.next_delay(DisconnectReason.IDLE_TIMEOUT, 90.0) == 0.0
