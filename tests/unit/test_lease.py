"""The leader lease's timing (pure): when to acquire, renew, and fence."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polygon_core.lease import LeaseAction, LeasePolicy, Role


def test_standby_tries_every_acquire_interval() -> None:
    policy = LeasePolicy(5.0, acquire_interval_s=0.25)
    assert policy.next_action(0.0) == (LeaseAction.ACQUIRE, 0.0)
    policy.not_acquired(0.0)
    action, wait = policy.next_action(0.1)
    assert action is LeaseAction.WAIT and wait == pytest.approx(0.15)
    assert policy.next_action(0.25)[0] is LeaseAction.ACQUIRE
    assert not policy.is_active(0.25)


def test_active_renews_every_third_and_fences_at_the_deadline() -> None:
    policy = LeasePolicy(3.0, margin_s=0.6)
    policy.acquired(sent_at=10.0, now=10.05)
    assert policy.role is Role.ACTIVE and policy.is_active(10.05)
    assert policy.fence_deadline() == pytest.approx(12.4)
    action, wait = policy.next_action(10.5)
    assert action is LeaseAction.WAIT and wait == pytest.approx(0.5)
    assert policy.next_action(11.0)[0] is LeaseAction.RENEW
    policy.attempt_failed(11.0)  # the store does not answer
    assert policy.next_action(11.1)[0] is LeaseAction.WAIT
    assert policy.next_action(11.3)[0] is LeaseAction.RENEW
    assert policy.request_timeout_s(11.3) == pytest.approx(1.1)
    assert policy.is_active(12.39) and not policy.is_active(12.4)
    assert policy.next_action(12.4) == (LeaseAction.FENCE, 0.0)
    policy.lost(12.4)
    assert policy.role is Role.STANDBY and policy.fence_deadline() is None


def test_a_renewal_counts_from_its_send_time() -> None:
    policy = LeasePolicy(3.0, margin_s=0.6)
    policy.acquired(0.0, 0.0)
    policy.renewed(sent_at=1.0, now=2.3)  # slow reply
    assert policy.fence_deadline() == pytest.approx(3.4)
    policy.renewed(sent_at=0.5, now=2.4)  # an older request's late reply moves nothing back
    assert policy.fence_deadline() == pytest.approx(3.4)


def test_an_acquire_answered_after_its_deadline_is_not_used() -> None:
    policy = LeasePolicy(1.0, margin_s=0.2)
    policy.acquired(sent_at=0.0, now=0.9)
    assert policy.role is Role.STANDBY and not policy.is_active(0.9)


def test_after_an_outage_a_standby_holding_nothing_lets_the_former_leader_claim_first() -> None:
    policy = LeasePolicy(5.0, acquire_interval_s=0.25)  # claim delay 4 x 0.25 s
    policy.attempt_failed(0.0)  # the store is down
    assert policy.next_action(0.25) == (LeaseAction.PROBE, 0.0)
    policy.attempt_failed(0.25)  # the probe fails too: still down
    assert policy.next_action(0.5)[0] is LeaseAction.PROBE
    policy.probed(0.5)  # answered: the store is back
    action, wait = policy.next_action(0.5)
    assert action is LeaseAction.WAIT and wait == pytest.approx(1.0)
    assert policy.next_action(1.5) == (LeaseAction.ACQUIRE, 0.0)
    eager = LeasePolicy(5.0, acquire_interval_s=0.25)
    eager.eager = True  # it holds values of its last term
    eager.attempt_failed(0.0)
    assert eager.next_action(0.25) == (LeaseAction.ACQUIRE, 0.0)


def test_a_standby_whose_requests_are_answered_claims_at_once() -> None:
    """A SIGKILLed leader's standby: its attempts were answered 'held', so when the lease
    expires it takes it on the next attempt, without probe or delay."""
    policy = LeasePolicy(5.0, acquire_interval_s=0.25)
    policy.attempt_failed(0.0)
    policy.not_acquired(0.25)  # answered: held by another task
    assert policy.next_action(0.5) == (LeaseAction.ACQUIRE, 0.0)


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        LeasePolicy(0)
    with pytest.raises(ValueError):
        LeasePolicy(1.0, margin_s=1.0)


_step = st.tuples(
    st.sampled_from(["advance", "ok", "fail", "other", "late_ok"]),
    st.floats(min_value=0.0, max_value=3.0, allow_nan=False),
)


@settings(max_examples=300, deadline=None)
@given(
    ttl=st.floats(min_value=0.2, max_value=10.0),
    steps=st.lists(_step, max_size=60),
)
def test_never_active_past_the_fencing_deadline(ttl: float, steps: list) -> None:
    """Whatever the store answers and however late, the task is never active once the
    last successful request it *sent* is ``ttl - margin`` old; so it has fenced itself
    before the lease could expire on the store."""
    policy = LeasePolicy(ttl)
    now = 0.0
    last_ok_sent: float | None = None
    for kind, amount in steps:
        if kind == "advance":
            now += amount
        else:
            action, _ = policy.next_action(now)
            if action is LeaseAction.FENCE:
                policy.lost(now)
                last_ok_sent = None
                continue
            if action not in (LeaseAction.ACQUIRE, LeaseAction.RENEW):
                continue
            sent = now
            now += amount * (1.0 if kind == "late_ok" else 0.01)
            if kind in ("ok", "late_ok"):
                if action is LeaseAction.ACQUIRE:
                    policy.acquired(sent, now)
                else:
                    policy.renewed(sent, now)
                if policy.role is Role.ACTIVE:
                    last_ok_sent = sent if last_ok_sent is None else max(last_ok_sent, sent)
                else:
                    last_ok_sent = None
            elif kind == "fail":
                policy.attempt_failed(now)
            else:  # another task holds it
                if action is LeaseAction.RENEW:
                    policy.lost(now)
                    last_ok_sent = None
                else:
                    policy.not_acquired(now)
        if policy.is_active(now):
            assert last_ok_sent is not None
            assert now < last_ok_sent + ttl - policy.margin_s
        deadline = policy.fence_deadline()
        if deadline is not None:
            assert deadline <= (last_ok_sent or 0.0) + ttl - policy.margin_s + 1e-9
