"""The benchmark keeps working: ``python -m bench --quick`` completes, exits 0 and prints a
row with numeric figures for every workload. Speed is never asserted here."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from bench.workloads import QUICK, workloads

from tests.helpers import missing_server
from tests.moto_server import moto_available
from tests.redis_servers import redis_server_available

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
NUMBER = r"-?\d[\d,]*(?:\.\d+)?"


def test_quick_bench_runs_every_workload(tmp_path) -> None:
    if not redis_server_available():
        missing_server("redis-server is not installed")
    if not moto_available():
        missing_server("moto[server] is not installed")
    out_json = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out_json)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("machine: ") and "cores" in lines[0]
    for w in workloads(QUICK):
        row = next((ln for ln in lines if ln.startswith(w.title)), None)
        assert row is not None, f"no row for {w.title!r}:\n{proc.stdout}"
        figures = re.findall(NUMBER, row[len(w.title) :])
        assert len(figures) >= 2, row  # events/s and CPU µs/event at least
        assert row.rstrip().endswith("ok"), row
    document = json.loads(out_json.read_text())
    assert document["ok"] is True
    for w in workloads(QUICK):
        median = document["workloads"][w.key]["median"]
        assert median["events_per_s"] > 0 and median["cpu_us_per_event"] >= 0, w.key
        if w.client != "null":
            # None (no Redis command counted) fails with the row's name, not a TypeError
            assert (median["peak_rss_mb"] or 0) > 0, (w.key, median)
            assert (median["commands_per_event"] or 0) > 0, (w.key, median, proc.stdout)
        if w.paced:
            assert median["p50_ms"] is not None and median["p99_ms"] is not None, w.key
