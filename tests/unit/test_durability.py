"""``DurabilityPolicy``: when a quiet object's tail is due, and what is done with it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polygon_core.durability import DurabilityPolicy, TailAction
from polygon_core.rotation import MAX_PARTS, MIN_PART_BYTES, RotationPolicy

MIB = 1024 * 1024


def test_a_tail_is_due_before_the_bound_leaving_time_for_its_upload() -> None:
    policy = DurabilityPolicy(60.0, 16 * MIB, 512_000_000)
    assert policy.send_after_s == 50.0
    assert policy.due_s(1000.0) == 1050.0
    assert DurabilityPolicy(4.0, 16 * MIB, 512_000_000).send_after_s == 2.0
    assert DurabilityPolicy(1.0, 16 * MIB, 512_000_000).send_after_s == 0.5


def test_small_tails_are_sent_as_copies_large_ones_cut() -> None:
    policy = DurabilityPolicy(60.0, 16 * MIB, 512_000_000)
    assert policy.action(1, 1, 1) is TailAction.SEND
    assert policy.action(MIN_PART_BYTES - 1, 3, 40 * MIB) is TailAction.SEND
    assert policy.action(MIN_PART_BYTES, 1, MIN_PART_BYTES) is TailAction.CUT
    assert policy.action(15 * MIB, 2, 31 * MIB) is TailAction.CUT


def test_a_cut_that_could_run_out_of_part_numbers_completes_the_object_instead() -> None:
    rotation = RotationPolicy.from_config(30, MAX_PARTS * 16 * MIB, 16 * MIB)
    policy = DurabilityPolicy(60.0, rotation.part_size_bytes, rotation.max_object_bytes)
    # an object that may still grow by 10,000 full parts has no part number to spare
    assert policy.action(MIN_PART_BYTES, 1, MIN_PART_BYTES) is TailAction.ROTATE
    # with room for the rest, the cut is fine
    late = rotation.max_object_bytes - 100 * 16 * MIB
    assert policy.action(MIN_PART_BYTES, 9_000, late) is TailAction.CUT
    # a copy takes no part number
    assert policy.action(MIN_PART_BYTES - 1, 1, MIN_PART_BYTES - 1) is TailAction.SEND


@given(
    st.integers(1, 5 * 1024**3),
    st.integers(5, 64),
    st.lists(st.integers(1, 64 * MIB), max_size=200),
    st.lists(st.booleans(), max_size=200),
)
def test_time_cuts_never_take_an_object_past_10000_parts(
    max_object: int, part_mib: int, sizes: list[int], due: list[bool]
) -> None:
    """Lines filed as the archive files them (size cuts at the part size, rotation at the
    object limit), with tails falling due at random: every part but the last is at least
    5 MiB and no object exceeds 10,000 parts (the explicit ROTATE case is above)."""
    rotation = RotationPolicy.from_config(30, max_object, part_mib * MIB)
    part_size, limit = rotation.part_size_bytes, rotation.max_object_bytes
    policy = DurabilityPolicy(60.0, part_size, limit)
    objects: list[list[int]] = [[]]
    size = tail = 0
    for n, is_due in zip(sizes, due + [False] * len(sizes), strict=False):
        if rotation.should_rotate(size, n):
            if tail:
                objects[-1].append(tail)
            objects.append([])
            size = tail = 0
        size += n
        tail += n
        if tail >= part_size:
            objects[-1].append(tail)
            tail = 0
        if is_due and tail:
            action = policy.action(tail, len(objects[-1]) + 1, size)
            if action is TailAction.CUT:
                objects[-1].append(tail)
                tail = 0
            elif action is TailAction.ROTATE:
                objects[-1].append(tail)
                objects.append([])
                size = tail = 0
    if tail:
        objects[-1].append(tail)
    for parts in objects:
        assert len(parts) <= MAX_PARTS
        assert all(p >= MIN_PART_BYTES for p in parts[:-1])


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        DurabilityPolicy(0.0, 16 * MIB, 1)
    with pytest.raises(ValueError):
        DurabilityPolicy(60.0, MIB, 1)
    with pytest.raises(ValueError):
        DurabilityPolicy(60.0, 16 * MIB, 1).action(0, 1, 0)
