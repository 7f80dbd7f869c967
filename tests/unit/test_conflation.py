from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from polygon_core.conflation import ConflationBuffer

offers = st.lists(st.tuples(st.sampled_from(["k1", "k2", "k3"]), st.integers(0, 20)), max_size=60)
# A script of operations: offer(key, time), drain (write succeeds), or drain + fail + requeue.
ops = st.lists(
    st.one_of(
        st.tuples(st.just("offer"), st.sampled_from(["k1", "k2", "k3"]), st.integers(0, 20)),
        st.tuples(st.just("flush_ok"), st.none(), st.none()),
        st.tuples(st.just("flush_fail"), st.none(), st.none()),
    ),
    max_size=80,
)


@given(offers)
def test_holds_newest_per_key_with_later_arrival_winning_ties(seq: list[tuple[str, int]]) -> None:
    buffer: ConflationBuffer[int] = ConflationBuffer()
    for arrival, (key, t) in enumerate(seq):
        buffer.offer(key, t, arrival)
    expected: dict[str, tuple[int, int]] = {}
    for arrival, (key, t) in enumerate(seq):
        if key not in expected or t >= expected[key][0]:
            expected[key] = (t, arrival)
    assert {k: (t, item) for k, t, item in buffer.drain()} == expected
    assert len(buffer) == 0 and buffer.drain() == []


@given(ops)
def test_never_rolls_back_past_a_written_value(
    script: list[tuple[str, str | None, int | None]],
) -> None:
    buffer: ConflationBuffer[int] = ConflationBuffer()
    store: dict[str, tuple[int, int]] = {}  # key -> (event time, arrival) as "written"
    seen: dict[str, tuple[int, int]] = {}  # model: newest accepted per key
    offered = dropped = 0
    for arrival, (op, key, t) in enumerate(script):
        if op == "offer":
            assert key is not None and t is not None
            offered += 1
            accepted = buffer.offer(key, t, arrival)
            should = key not in seen or t >= seen[key][0]
            assert accepted == should
            if should:
                seen[key] = (t, arrival)
            else:
                dropped += 1
        else:
            batch = buffer.drain()
            assert len({k for k, _, _ in batch}) == len(batch)  # one item per key
            if op == "flush_ok":
                for k, bt, item in batch:
                    if k in store:
                        assert (bt, item) >= store[k], "a write rolled a key back"
                    store[k] = (bt, item)
            else:
                buffer.requeue(batch)
    # Final flush: every key ends at the newest accepted value.
    for k, bt, item in buffer.drain():
        store[k] = (bt, item)
    assert store == seen
    assert buffer.late_dropped == dropped
    assert buffer.accepted == offered - dropped


def test_requeue_yields_to_newer_and_equal_later_arrivals() -> None:
    buffer: ConflationBuffer[str] = ConflationBuffer()
    buffer.offer("a", 5, "old-a")
    buffer.offer("b", 5, "old-b")
    batch = buffer.drain()
    assert buffer.offer("a", 5, "new-a")  # equal time, later arrival wins
    assert not buffer.offer("b", 4, "late-b")
    assert buffer.requeue(batch) == 1
    assert sorted(buffer.drain()) == [("a", 5, "new-a"), ("b", 5, "old-b")]
    assert buffer.late_dropped == 1


def test_drop_pending_forgets_values_but_keeps_the_newest_time() -> None:
    buffer: ConflationBuffer[str] = ConflationBuffer()
    buffer.offer("k1", 5, "old")
    buffer.offer("k2", 7, "keep")
    assert buffer.drop_pending(lambda item: item == "keep") == 1
    assert [key for key, _, _ in buffer.drain()] == ["k2"]
    assert not buffer.offer("k1", 4, "older")  # still refused: 5 was accepted
    assert buffer.superseded == 0 and len(buffer) == 0


def test_counts_superseded_and_bounded_by_keys() -> None:
    buffer: ConflationBuffer[int] = ConflationBuffer()
    for i in range(10_000):
        buffer.offer(f"k{i % 10}", i, i)
    assert len(buffer) == 10 and buffer.known_keys == 10
    assert buffer.superseded == 10_000 - 10
    assert buffer.newest_time("k3") == 9993
    assert buffer.newest_time("zz") is None


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["T", "Q", "AM", "FMV"]),
            st.sampled_from(["A", "B.B"]),
            st.integers(0, 9),
        ),
        max_size=60,
    )
)
def test_offer_events_is_offer_per_event(script: list[tuple[str, str, int]]) -> None:
    """The hot-path loop does exactly what ``offer(key_for(...), event_time(...), e)`` does."""
    from polygon_core.codec import decode_frame
    from polygon_core.conflation import EventConflation
    from polygon_core.events import event_time
    from polygon_core.keys import key_for
    from tests.strategies import dumps

    wire = []
    for ev, sym, t in script:
        if ev == "T":
            wire.append({"ev": "T", "sym": sym, "p": t, "s": 1, "t": t})
        elif ev == "Q":
            wire.append({"ev": "Q", "sym": sym, "bp": t, "bs": 1, "ap": 1, "as": 1, "t": t})
        elif ev == "AM":
            wire.append(
                {
                    "ev": "AM",
                    "sym": sym,
                    "s": t,
                    "e": t,
                    "o": t,
                    "h": 1,
                    "l": 1,
                    "c": 1,
                    "v": 1,
                    "vw": 1,
                }
            )
        else:
            wire.append({"ev": "FMV", "sym": sym, "fmv": t, "t": t})
    events = decode_frame(dumps(wire)).events
    fast = EventConflation()
    fast.offer_events(events[: len(events) // 2])
    fast.offer_events(events[len(events) // 2 :])
    plain: ConflationBuffer[object] = ConflationBuffer()
    for e in events:
        plain.offer(key_for(e.channel, e.symbol), event_time(e), e)
    assert fast.drain() == plain.drain()
    assert (fast.accepted, fast.late_dropped, fast.superseded) == (
        plain.accepted, plain.late_dropped, plain.superseded,
    )  # fmt: skip
    assert sum(fast.events_by_channel.values()) == len(events)
