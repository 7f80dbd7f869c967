"""Small helpers shared by the test suites."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import pytest

IN_CI = os.environ.get("CI") == "true"


async def eventually(condition: Callable[[], bool], within_s: float = 5.0) -> None:
    """Wait until ``condition()`` holds, failing after ``within_s`` seconds."""
    async with asyncio.timeout(within_s):
        while not condition():  # noqa: ASYNC110 - polling observable state is the point
            await asyncio.sleep(0.001)


def missing_server(reason: str) -> None:
    """Skip a test whose real server is absent, except under CI=true where it fails."""
    if IN_CI:
        pytest.fail(f"required server missing under CI=true: {reason}")
    pytest.skip(reason)
