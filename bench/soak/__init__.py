"""The soak-and-chaos run of issue 8 (``python -m bench.soak``); see docs/reliability.md."""
