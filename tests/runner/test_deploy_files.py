"""ecs/*.json against botocore's ECS API model, plus the rules that keep one task running."""

from __future__ import annotations

import json
import re
from pathlib import Path

import botocore.session
import pytest
from botocore.validate import ParamValidator

ROOT = Path(__file__).resolve().parents[2]


def validate(operation: str, params: dict) -> None:
    model = botocore.session.get_session().get_service_model("ecs")
    shape = model.operation_model(operation).input_shape
    report = ParamValidator().validate(params, shape)
    assert not report.has_errors(), report.generate_report()


def test_task_definition_matches_the_api_model() -> None:
    task = json.loads((ROOT / "ecs/task-def.json").read_text())
    validate("RegisterTaskDefinition", task)
    (container,) = task["containerDefinitions"]
    assert task["requiresCompatibilities"] == ["FARGATE"]
    assert container["logConfiguration"]["logDriver"] == "awslogs"
    assert container["stopTimeout"] == 120  # > SHUTDOWN_TIMEOUT_SEC
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert int(env["SHUTDOWN_TIMEOUT_SEC"]) < container["stopTimeout"]
    secrets = {s["name"] for s in container["secrets"]}
    assert {"POLYGON_API_KEY", "REDIS_URL", "REDIS_TOKEN"} <= secrets
    assert not secrets & set(env)
    assert "/healthz" in " ".join(container["healthCheck"]["command"])


def test_service_never_runs_two_tasks() -> None:
    service = json.loads((ROOT / "ecs/service.json").read_text())
    validate("CreateService", service)
    assert service["desiredCount"] == 1
    assert service["deploymentConfiguration"]["maximumPercent"] == 100
    assert service["deploymentConfiguration"]["minimumHealthyPercent"] == 0


def _strip(task: dict) -> dict:
    """The task definition without its family and environment."""
    containers = [{**c, "environment": []} for c in task["containerDefinitions"]]
    return {**task, "family": "", "containerDefinitions": containers}


def _env(task: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in task["containerDefinitions"][0]["environment"]}


def test_ha_services_overlap_only_with_the_lease_on() -> None:
    """Overlap deploys and the two-task standby (docs/operations.md) run the task
    definition that turns the leader lease on; it differs from the plain one in that alone."""
    plain = json.loads((ROOT / "ecs/task-def.json").read_text())
    ha = json.loads((ROOT / "ecs/task-def-ha.json").read_text())
    validate("RegisterTaskDefinition", ha)
    assert _env(ha) == {**_env(plain), "HA_ENABLED": "true", "HA_LEASE_TTL_MS": "5000"}
    assert "HA_ENABLED" not in _env(plain)
    assert _strip(ha) == _strip(plain)
    rolling = json.loads((ROOT / "ecs/service-ha.json").read_text())
    standby = json.loads((ROOT / "ecs/service-ha-standby.json").read_text())
    for service, desired, maximum in ((rolling, 1, 200), (standby, 2, 150)):
        validate("CreateService", service)
        assert service["taskDefinition"] == ha["family"] == "polygon-sink-ha"
        assert service["desiredCount"] == desired
        assert service["deploymentConfiguration"]["minimumHealthyPercent"] == 100
        assert service["deploymentConfiguration"]["maximumPercent"] == maximum
    single = json.loads((ROOT / "ecs/service.json").read_text())
    assert single["taskDefinition"] == plain["family"]


def test_the_validator_rejects_a_bad_file() -> None:
    with pytest.raises(AssertionError):
        validate("CreateService", {"serviceName": "x", "desiredCount": "one"})


def test_dockerfile_is_non_root_with_a_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER (?!root)\w+", text, flags=re.M)
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert text.count("FROM ") >= 2  # multi-stage


def test_athena_doc_ddl_is_the_commands_output() -> None:
    from polygon_runner.athena import TABLES, render_ddl

    text = (ROOT / "docs/athena.md").read_text()
    blocks = re.findall(r"```sql\n(CREATE EXTERNAL TABLE.*?)\n```", text, flags=re.S)
    assert blocks == [render_ddl("S3_BUCKET", "S3_PREFIX", c) for c in TABLES]


def test_athena_ddl_command(capsys) -> None:
    from polygon_runner.__main__ import main

    assert main(["athena-ddl", "--bucket", "b", "--prefix", "/raw/x/", "--channel", "Q"]) == 0
    out = capsys.readouterr().out
    assert "LOCATION 's3://b/raw/x/channel=Q/'" in out and "polygon_quotes_raw" in out
    assert "polygon_trades_raw" not in out


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["simulate", "--help"], "usage: polygon-sink simulate "),
        (["demo", "--help"], "usage: polygon-sink demo "),
        (["athena-ddl", "--help"], "usage: polygon-sink athena-ddl "),
        (["simulate", "--no-such-option"], "usage: polygon-sink simulate "),
    ],
)
def test_subcommand_help_names_the_command_typed(capsys, argv: list[str], usage: str) -> None:
    from polygon_runner.__main__ import main

    with pytest.raises(SystemExit):
        main(argv)
    captured = capsys.readouterr()
    assert (captured.out + captured.err).startswith(usage)


def test_simulator_module_help_names_the_module(capsys) -> None:
    from polygon_sim.server import main

    with pytest.raises(SystemExit):
        main(["--help"])
    assert capsys.readouterr().out.startswith("usage: python -m polygon_sim ")


def _dockerfile_final_stage() -> dict[str, str]:
    """The final stage's instructions (last one of each kind), continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    stage = re.split(r"^FROM .*$", text, flags=re.M)[-1]
    lines = [ln.strip() for ln in stage.splitlines() if ln.strip() and not ln.startswith("#")]
    return {ln.split()[0]: ln.split(None, 1)[1] for ln in lines}


def test_dockerfile_and_task_definition_agree() -> None:
    final = _dockerfile_final_stage()
    (container,) = json.loads((ROOT / "ecs/task-def.json").read_text())["containerDefinitions"]
    env = {e["name"]: e["value"] for e in container["environment"]}
    image_env = dict(re.findall(r"(\w+)=(\S+)", final["ENV"]))
    port = int(final["EXPOSE"])
    assert image_env["HEALTH_PORT"] == env["HEALTH_PORT"] == str(port)
    assert [m["containerPort"] for m in container["portMappings"]] == [port]
    assert f"127.0.0.1:{port}/healthz" in " ".join(container["healthCheck"]["command"])
    assert json.loads(final["CMD"]) == container["command"] == ["run"]
    assert json.loads(final["ENTRYPOINT"]) == ["polygon-sink"]
    assert "user" not in container  # the image's non-root USER applies
    assert final["USER"].split(":")[0] not in ("root", "0")
    assert container["image"].rsplit(":", 1)[0].endswith(".amazonaws.com/polygon-sink")
