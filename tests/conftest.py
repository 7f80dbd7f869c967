"""Shared test configuration: hypothesis profiles (``dev`` default, ``ci`` under CI=true)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile(
    "ci",
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") == "true" else "dev")
)

# Real servers (redis-server, a Redis Cluster, TLS Redis) as session fixtures for every suite.
pytest_plugins = ["tests.server_fixtures"]
