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
