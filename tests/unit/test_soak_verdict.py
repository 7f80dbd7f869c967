"""The soak's judgement: check 3's bounds (lag, the hot path, within the recovery limit
after every outage; writes resumed within it too, except an S3 outage's first part, which
is moto's time) and check 6's memory level (RSS less the archive's buffers)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from bench.soak.chaos import Chaos, Outage
from bench.soak.observe import Sample
from bench.soak.plan import SoakConfig
from bench.soak.run import _rss_level, may_have_expired
from bench.soak.verdict import Recovery

CFG = SoakConfig()


def recovery(kind: str, resumed_s: float | None, lag_ok_s: float | None) -> Recovery:
    return Recovery(Outage(kind, None, 0.0, 10.0), resumed_s, lag_ok_s)


@pytest.mark.parametrize(
    ("kind", "resumed_s", "lag_ok_s", "ok"),
    [
        ("redis_down", 1.9, 0.5, True),
        ("redis_down", 2.1, 0.5, False),
        ("drop", 0.1, 2.1, False),
        ("s3_down_at_start", 4.9, 0.5, True),
        ("s3_down", 4.9, 0.5, True),
        ("s3_down", 5.1, 0.5, False),
        ("s3_down", 1.0, 2.1, False),  # the hot path keeps the 2 s bound during the catch-up
        ("s3_down", None, 0.5, False),
        ("redis_failover", 0.5, None, False),
    ],
)
def test_check_3_bounds(
    kind: str, resumed_s: float | None, lag_ok_s: float | None, ok: bool
) -> None:
    assert (
        recovery(kind, resumed_s, lag_ok_s).within(CFG.recovery_limit_s, CFG.s3_resume_limit_s)
        is ok
    )


def test_memory_is_judged_less_the_archive_buffers() -> None:
    """Part buffers filling and emptying are not growth; memory held besides them is."""
    mib = 1 << 20
    now = time.time()
    times = [now - 9 + i for i in range(9)]
    buffered = [(i % 3) * 16 * mib for i in range(9)]  # a sawtooth of 16 MiB parts
    scrapes = [
        Sample(t - 0.05, {"polygon_archive_bytes_buffered": b})
        for t, b in zip(times, buffered, strict=True)
    ]
    steady = SimpleNamespace(
        rss=SimpleNamespace(
            samples=[(t, 100 * mib + b) for t, b in zip(times, buffered, strict=True)]
        ),
        poller=SimpleNamespace(samples=scrapes),
    )
    assert _rss_level(steady) == (100 * mib, 132 * mib)  # type: ignore[arg-type]
    grown = SimpleNamespace(
        rss=SimpleNamespace(
            samples=[(t, 120 * mib + b) for t, b in zip(times, buffered, strict=True)]
        ),
        poller=SimpleNamespace(samples=scrapes),
    )
    assert _rss_level(grown)[0] == 120 * mib  # type: ignore[arg-type]


def test_an_outage_waits_until_the_one_before_has_been_judged() -> None:
    """A host's backoff can outgrow its reserve (reconnects close together): the next
    outage starts late instead of falling into the last one's recovery window."""
    chaos = Chaos(SimpleNamespace(cfg=CFG))  # type: ignore[arg-type]
    assert chaos._judged_in() == 0.0
    chaos.outages.append(Outage("drop", "realtime", time.time() - 10.0, time.time() - 1.0))
    wait = chaos._judged_in()
    assert CFG.recovery_limit_s + 5.0 - 1.1 < wait <= CFG.recovery_limit_s + 5.0 - 1.0
    chaos.outages.append(Outage("redis_down", None, time.time() - 60.0, time.time() - 30.0))
    assert chaos._judged_in() == pytest.approx(wait, abs=0.05)  # the latest end counts
    chaos.outages[0].ended = time.time() - 20.0
    assert chaos._judged_in() < 0


def test_a_missing_key_may_have_expired_only_once_its_ttl_has_run_from_the_event() -> None:
    assert may_have_expired(60_000, 60) and may_have_expired(75_000.5, 60)
    assert not may_have_expired(59_999, 60)  # written no earlier than made: still there
