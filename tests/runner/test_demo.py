"""The README's run command works: the demo runs the real pipeline and stops cleanly."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import missing_server
from tests.redis_servers import redis_server_available

pytestmark = pytest.mark.integration


def test_demo_runs_end_to_end_and_exits_0(tmp_path) -> None:
    if not redis_server_available():
        missing_server("redis-server is not installed")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "polygon_runner", "demo", "--duration", "3", "--no-clear"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "stopped cleanly (exit 0)" in out
    last_view = out.rsplit("polygon-sink demo", 1)[-1]
    assert "realtime  feed streaming" in last_view and "delayed   feed streaming" in last_view
    for key in ("stock:quote:AAPL", "stock:trade:BRK.B"):
        line = next(ln for ln in last_view.splitlines() if ln.startswith(key))
        assert '"symbol"' in line and "(not yet)" not in line
    assert "demo-key" not in out + proc.stderr
