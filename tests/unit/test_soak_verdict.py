"""The soak's check 3 bounds: lag (the hot path) within the recovery limit after every
outage; writes resumed within it too, except an S3 outage's first part (moto's time)."""

from __future__ import annotations

import pytest
from bench.soak.chaos import Outage
from bench.soak.plan import SoakConfig
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
