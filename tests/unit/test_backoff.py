"""Reconnect delays and cooldowns (SPEC §4; polygon-protocol.md §4, §14 item 8)."""

from __future__ import annotations

import itertools
import math
import random as stdlib_random
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polygon_core.backoff import DisconnectReason, ReconnectPolicy, backoff_delays


def take(n: int, it: Iterator[float]) -> list[float]:
    return list(itertools.islice(it, n))


def zero() -> float:
    return 0.0


# -- backoff_delays ---------------------------------------------------------------------------


def test_defaults_of_the_brief() -> None:
    assert take(7, backoff_delays(1000, 2.0, 30000, zero)) == [1, 2, 4, 8, 16, 30, 30]


def test_jitter_only_shortens() -> None:
    assert take(3, backoff_delays(1000, 2.0, 30000, lambda: 0.5, jitter=0.2)) == [0.9, 1.8, 3.6]
    nearly_one = math.nextafter(1.0, 0.0)
    assert take(1, backoff_delays(1000, 2.0, 30000, lambda: nearly_one))[0] == pytest.approx(0.8)


def test_out_of_range_random_is_clamped() -> None:
    assert take(2, backoff_delays(1000, 2, 5000, lambda: 7.0, jitter=1.0)) == [0, 0]
    assert take(2, backoff_delays(1000, 2, 5000, lambda: -3.0, jitter=1.0)) == [1, 2]


@given(
    initial_ms=st.floats(min_value=1, max_value=60_000),
    factor=st.floats(min_value=1, max_value=10),
    extra_ms=st.floats(min_value=0, max_value=600_000),
    jitter=st.floats(min_value=0, max_value=1),
    seed=st.integers(),
)
def test_delays_stay_within_bounds_and_grow_by_the_factor(
    initial_ms: float, factor: float, extra_ms: float, jitter: float, seed: int
) -> None:
    max_ms = initial_ms + extra_ms
    rng = stdlib_random.Random(seed)
    jittered = take(40, backoff_delays(initial_ms, factor, max_ms, rng.random, jitter))
    bases = take(40, backoff_delays(initial_ms, factor, max_ms, zero, jitter))
    for n, (delay, base) in enumerate(zip(jittered, bases, strict=True)):
        assert 0 <= delay <= max_ms / 1000
        assert base * (1 - jitter) - 1e-9 <= delay <= base
        expected = min(max_ms, initial_ms * factor**n) / 1000 if n < 1000 else max_ms / 1000
        assert base == pytest.approx(expected, rel=1e-9)
    for a, b in itertools.pairwise(bases):
        assert b == pytest.approx(min(max_ms / 1000, a * factor), rel=1e-9)
    assert bases == sorted(bases)


def test_huge_growth_saturates_at_max() -> None:
    delays = take(2000, backoff_delays(1, 10.0, 1e300, zero))
    assert delays[-1] == 1e297 and all(math.isfinite(d) for d in delays)


@pytest.mark.parametrize(
    ("initial_ms", "factor", "max_ms", "jitter"),
    [
        (0, 2, 1000, 0.2),
        (-1, 2, 1000, 0.2),
        (math.nan, 2, 1000, 0.2),
        (100, 0.5, 1000, 0.2),
        (100, math.inf, 1000, 0.2),
        (100, 2, 99, 0.2),
        (100, 2, math.inf, 0.2),
        (100, 2, 1000, -0.1),
        (100, 2, 1000, 1.5),
        (100, 2, 1000, math.nan),
    ],
)
def test_arguments_are_validated_eagerly(
    initial_ms: float, factor: float, max_ms: float, jitter: float
) -> None:
    with pytest.raises(ValueError):
        backoff_delays(initial_ms, factor, max_ms, zero, jitter)  # no next() needed
    with pytest.raises(ValueError):
        ReconnectPolicy(initial_ms=initial_ms, factor=factor, max_ms=max_ms, random=zero,
                        jitter=jitter)  # fmt: skip


def test_policy_rejects_negative_windows() -> None:
    with pytest.raises(ValueError):
        ReconnectPolicy(random=zero, healthy_after_s=-1)
    with pytest.raises(ValueError):
        ReconnectPolicy(random=zero, min_cooldown_s=-1)


# -- ReconnectPolicy --------------------------------------------------------------------------


def policy(**kwargs: float) -> ReconnectPolicy:
    return ReconnectPolicy(initial_ms=1000, factor=2.0, max_ms=30000, random=zero, **kwargs)


@pytest.mark.parametrize(
    "reason",
    [
        DisconnectReason.DROP,
        DisconnectReason.AUTH_TIMEOUT,
        DisconnectReason.SLOW_CONSUMER,
        DisconnectReason.FORCE_DISCONNECT,
        DisconnectReason.SERVER_ERROR,
        DisconnectReason.CONNECT_FAILED,
    ],
)
def test_ordinary_reasons_use_the_backoff(reason: DisconnectReason) -> None:
    p = policy()
    assert [p.next_delay(reason, float(t)) for t in range(6)] == [1, 2, 4, 8, 16, 30]
    assert p.attempt == 6
    assert p.retry_at_s == 5 + 30


def test_auth_failed_waits_at_least_the_max_backoff_and_60_s() -> None:
    p = policy()
    assert p.auth_failed_cooldown_s == 60
    assert p.next_delay(DisconnectReason.AUTH_FAILED, 0) == 60
    long_max = ReconnectPolicy(initial_ms=1000, factor=2, max_ms=300_000, random=zero)
    assert long_max.next_delay(DisconnectReason.AUTH_FAILED, 0) == 300


def test_max_connections_never_under_60_s() -> None:
    p = policy()
    for t in range(10):
        assert p.next_delay(DisconnectReason.MAX_CONNECTIONS, t * 100.0) >= 60
    tiny = ReconnectPolicy(initial_ms=1, factor=1, max_ms=1, random=zero)
    assert tiny.next_delay(DisconnectReason.MAX_CONNECTIONS, 0) == 60
    long_max = ReconnectPolicy(initial_ms=1000, factor=2, max_ms=120_000, random=zero)
    assert long_max.next_delay(DisconnectReason.MAX_CONNECTIONS, 0) == 120


def test_cooldowns_advance_the_ordinary_backoff() -> None:
    p = policy()
    p.next_delay(DisconnectReason.MAX_CONNECTIONS, 0)
    p.next_delay(DisconnectReason.AUTH_FAILED, 60)
    assert p.next_delay(DisconnectReason.DROP, 120) == 4


def test_no_reset_on_connect_or_auth_without_data() -> None:
    """The eviction loop of §4: connect, auth, max_connections, again and again."""
    p = policy()
    now = 0.0
    delays = []
    for _ in range(6):
        p.on_connected(now)  # auth_success would arrive here: the policy is not told
        now += 0.5
        delays.append(p.next_delay(DisconnectReason.DROP, now))
        now += delays[-1]
    assert delays == [1, 2, 4, 8, 16, 30]


def test_no_reset_after_a_short_burst_of_data() -> None:
    p = policy()
    for now in (0.0, 10.0, 30.0):
        p.on_connected(now)
        p.on_data(now + 1)
        p.on_data(now + 5)
        p.next_delay(DisconnectReason.DROP, now + 6)
    assert p.attempt == 3
    assert p.next_delay(DisconnectReason.DROP, 100) == 8


def test_reset_after_data_for_the_healthy_window() -> None:
    p = policy()
    for t in range(4):
        p.next_delay(DisconnectReason.DROP, float(t))
    p.on_connected(100)
    p.on_data(101)
    p.on_data(120)
    assert p.attempt == 4
    p.on_data(131)  # 30 s of data
    assert p.attempt == 0
    assert p.next_delay(DisconnectReason.DROP, 140) == 1


def test_reset_when_data_flowed_and_the_connection_lasted() -> None:
    p = policy()
    for t in range(4):
        p.next_delay(DisconnectReason.DROP, float(t))
    p.on_connected(100)
    p.on_data(101)  # then a quiet market
    assert p.next_delay(DisconnectReason.DROP, 200) == 1


def test_eviction_after_a_healthy_stream_still_cools_down() -> None:
    p = policy()
    p.next_delay(DisconnectReason.DROP, 0)
    p.on_connected(10)
    p.on_data(11)
    p.on_data(50)
    assert p.next_delay(DisconnectReason.MAX_CONNECTIONS, 51) == 60


def test_custom_healthy_window() -> None:
    p = policy(healthy_after_s=0)
    p.next_delay(DisconnectReason.DROP, 0)
    p.next_delay(DisconnectReason.DROP, 1)
    p.on_connected(5)
    p.on_data(6)
    assert p.attempt == 0


def test_reason_values_match_wire_statuses() -> None:
    for status in ("auth_failed", "max_connections", "auth_timeout", "slow_consumer"):
        assert DisconnectReason(status).value == status
    assert DisconnectReason("force_disconnect") is DisconnectReason.FORCE_DISCONNECT


def test_repr_is_informative() -> None:
    assert "attempt=0" in repr(policy())
