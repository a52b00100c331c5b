"""docker-compose.yml matches the code: valid YAML, every UNLEARN_* variable it sets is a
setting that parses, and every command it runs is an `unlearn` command."""

from __future__ import annotations

import shlex

import yaml
from typer.main import get_command

from app.cli import cli
from app.core.config import ENV_PREFIX, Settings, load_settings
from tests.conftest import ROOT


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_services_and_their_order():
    services = compose()["services"]
    assert set(services) == {"postgres", "migrate", "api", "worker"}
    assert services["api"]["depends_on"]["migrate"]["condition"] == \
        "service_completed_successfully"
    assert services["worker"]["environment"]["UNLEARN_DATABASE_URL"].startswith(
        "postgresql+psycopg://")
    assert services["api"]["environment"]["UNLEARN_EMBEDDED_WORKER"] == "false"
    assert (ROOT / services["api"]["build"] / "Dockerfile").is_file()


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
        if command is None:
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
