"""The polygon-sink benchmark (issue 7); run it with ``./scripts/bench``."""
