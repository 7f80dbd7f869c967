"""A CI-sized crash check (``python -m bench.crash`` is the full measurement).

The real service is SIGKILLed once S3 holds at least one uploaded part, then restarted with
the same environment and stopped with SIGTERM. The restarted service must exit 0, leave no
open multipart upload and no ``uploading.marker``, and the archive must hold at least what
the killed process had uploaded (recovery completes its contiguous parts), and every line
of every object, recovered ones included, must parse as JSON (parts end on line ends).
"""

from __future__ import annotations

import pytest
from bench.crash import CHANNELS, CrashConfig, run_rounds

from tests.helpers import missing_server
from tests.moto_server import moto_available
from tests.redis_servers import redis_server_available

pytestmark = pytest.mark.integration
MIB = 1024 * 1024


async def test_restart_after_sigkill_recovers_the_archive_and_leaves_nothing(tmp_path) -> None:
    if not redis_server_available():
        missing_server("redis-server is not installed")
    if not moto_available():
        missing_server("moto[server] is not installed")
    config = CrashConfig(
        rate=20_000.0,
        symbols=200,
        warmup_s=2.0,
        after_s=2.0,
        fresh_timeout_s=15.0,
        part_size_bytes=5 * MIB,
        min_uploaded_bytes=5 * MIB,
    )
    [result] = await run_rounds([config], tmp_path)
    assert result.restart_exit == 0, result.problems
    assert result.uploads_left == 0 and result.markers_left == 0
    assert result.uploaded_at_kill_bytes >= 5 * MIB
    assert result.recovered_bytes >= result.uploaded_at_kill_bytes
    assert sum(result.archived.values()) > 0
    for channel in CHANNELS:
        assert 0 <= result.archived[channel] <= result.delivered[channel], channel
    assert result.restart_archived > 0
    assert result.bad_lines == 0  # every line of every object parses, recovered ones too
    assert not result.problems, result.problems
