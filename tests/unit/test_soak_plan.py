"""The soak's market: the realistic compressed day by default, the flat full-throttle rate
for the CI window; the simulator it builds gets that market. With HA (the
default) the schedule holds a handover and a SIGKILL failover; with ``--no-ha``, neither."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.soak.__main__ import main
from bench.soak.plan import SoakConfig, schedule
from bench.soak.world import World


def test_the_default_soak_runs_the_realistic_day() -> None:
    cfg = SoakConfig()
    assert (cfg.market, cfg.events_per_second, cfg.session_speed) == ("realistic", 12_000, 60)
    assert SoakConfig(market="flat").events_per_second == 50_000
    assert SoakConfig(market="flat", rate=8_000).events_per_second == 8_000


def test_the_world_gives_the_simulator_the_soaks_market(tmp_path: Path) -> None:
    sim = World(SoakConfig(), tmp_path).sim.config
    assert (sim.market, sim.events_per_second) == ("realistic", 12_000)
    assert (sim.session, sim.session_speed) == ("open", 60)
    flat = World(SoakConfig(market="flat"), tmp_path).sim.config
    assert (flat.market, flat.events_per_second) == ("flat", 25_000)  # per host


TAKEOVERS = {"handover", "sigkill"}


def test_the_ha_soak_hands_over_and_fails_over() -> None:
    kinds = [f.kind for f in schedule(SoakConfig())]
    assert SoakConfig().ha  # the default
    assert (kinds.count("handover"), kinds.count("sigkill")) == (1, 1)
    assert not TAKEOVERS & {f.kind for f in schedule(SoakConfig(ha=False))}


def test_ha_on_the_command_line_adds_the_takeovers(capsys: pytest.CaptureFixture[str]) -> None:
    def planned(*argv: str) -> set[str]:
        assert main(["--plan", *argv]) == 0
        return {line.split()[2] for line in capsys.readouterr().out.splitlines()}

    assert planned("--ha") >= TAKEOVERS
    assert planned() >= TAKEOVERS
    assert not planned("--no-ha") & TAKEOVERS
