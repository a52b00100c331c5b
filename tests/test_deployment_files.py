"""docker-compose.yml matches the code: the services it must run, health checks on every
long-running one, every UNLEARN_* variable it sets is a setting that parses, and every
command our image runs is an `unlearn` command."""

from __future__ import annotations

import shlex

import yaml
from typer.main import get_command

from app.cli import cli
from app.core.config import ENV_PREFIX, Settings, load_settings
from tests.conftest import ROOT


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def one_shots(services: dict) -> set[str]:
    """Services others wait for to *finish* (migrations, bucket creation)."""
    return {name for service in services.values()
            for name, dependency in (service.get("depends_on") or {}).items()
            if dependency.get("condition") == "service_completed_successfully"}


def test_compose_services_and_their_order():
    services = compose()["services"]
    assert set(services) == {"postgres", "minio", "minio-init", "migrate", "api",
                             "worker-light", "worker-heavy"}
    assert one_shots(services) == {"minio-init", "migrate"}
    assert services["api"]["deploy"]["replicas"] == 2
    assert services["api"]["environment"]["UNLEARN_EMBEDDED_WORKER"] == "false"
    assert (ROOT / services["api"]["build"] / "Dockerfile").is_file()
    for name in ("api", "worker-light", "worker-heavy"):
        assert services[name]["depends_on"]["migrate"]["condition"] == \
            "service_completed_successfully"
        env = services[name]["environment"]
        assert env["UNLEARN_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["UNLEARN_ARTIFACT_URL"].startswith("s3://")
        assert env["UNLEARN_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert services["worker-light"]["command"][-2:] == ["--queues", "light"]
    assert services["worker-heavy"]["command"][-2:] == ["--queues", "heavy"]


def test_every_long_running_service_has_a_health_check():
    services = compose()["services"]
    for name, service in services.items():
        if name in one_shots(services):
            continue
        check = service.get("healthcheck")
        assert check and check["test"][0] in ("CMD", "CMD-SHELL"), name
    # The workers' check reads the file their loop touches.
    for name in ("worker-light", "worker-heavy"):
        alive = services[name]["environment"]["UNLEARN_WORKER_ALIVE_FILE"]
        assert alive in services[name]["healthcheck"]["test"][-1]
    assert "/readyz" in services["api"]["healthcheck"]["test"][-1]


def test_compose_environment_is_valid_settings():
    fields = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    for name, service in compose()["services"].items():
        env = {k: str(v) for k, v in (service.get("environment") or {}).items()
               if k.startswith(ENV_PREFIX)}
        assert set(env) <= fields, (name, set(env) - fields)
        if env:
            load_settings(**{k[len(ENV_PREFIX):].lower(): v for k, v in env.items()})


def test_compose_commands_are_unlearn_commands():
    click_cli = get_command(cli)
    for name, service in compose()["services"].items():
        command = service.get("command")
        if command is None or service.get("build") is None:  # not our image
            continue
        words = command if isinstance(command, list) else shlex.split(command)
        if words[:2] == ["sh", "-c"]:
            runs = [shlex.split(part) for part in words[2].split("&&")]
        else:
            runs = [words]
        for run in runs:
            assert run[0] == "unlearn", (name, run)
            # Resolve the (sub)command and parse its options as the console script would,
            # without running it: an unknown command or option raises here.
            command, rest = click_cli, list(run[1:])
            while hasattr(command, "commands"):
                command = command.commands.get(rest[0])
                assert command is not None, (name, run)
                rest = rest[1:]
            command.make_context(command.name, rest)
