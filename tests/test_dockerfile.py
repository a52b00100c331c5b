"""The Dockerfile, read as Docker reads it (instructions, line continuations, stages):
multi-stage, non-root, a health check on /healthz, dependencies before code, CPU-only
PyTorch wheels by default with a build argument for CUDA, and settings that parse."""

from __future__ import annotations

import json
import re
import shlex

from typer.main import get_command

from app.cli import cli
from app.core.config import ENV_PREFIX, Settings, load_settings
from tests.conftest import ROOT


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        lines.append(current)
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    parsed = []
    for line in lines:
        word, _, rest = line.partition(" ")
        parsed.append((word.upper(), rest.strip()))
    return parsed


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for word, rest in instructions():
        if word == "FROM":
            result.append([])
        if result:
            result[-1].append((word, rest))
    return result


def index_of(stage, predicate) -> int:
    for position, (word, rest) in enumerate(stage):
        if predicate(word, rest):
            return position
    raise AssertionError("instruction not found")


def env_of(stage) -> dict[str, str]:
    env = {}
    for word, rest in stage:
        if word == "ENV":
            for item in shlex.split(rest):
                name, _, value = item.partition("=")
                env[name] = value
    return env


def test_the_image_is_built_in_stages_and_runs_as_a_non_root_user():
    all_stages = stages()
    assert len(all_stages) >= 2
    runtime = all_stages[-1]
    build_name = all_stages[0][0][1].split()[-1]
    assert any(word == "COPY" and f"--from={build_name}" in rest for word, rest in runtime)
    users = [rest for word, rest in runtime if word == "USER"]
    assert users, "the runtime stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    # The user exists in the image: created in this stage.
    assert any(word == "RUN" and re.search(rf"useradd\b.*\b{user}\b", rest)
               for word, rest in runtime)


def test_healthcheck_probes_healthz():
    runtime = stages()[-1]
    checks = [rest for word, rest in runtime if word == "HEALTHCHECK"]
    assert len(checks) == 1
    options, _, command = checks[0].partition("CMD ")
    assert "--interval=" in options
    probe = json.loads(command)  # exec form: runs without a shell, python is in the image
    assert probe[:2] == ["python", "-c"] and "/healthz" in probe[2]
    compile(probe[2], "healthcheck", "exec")


def test_dependencies_are_installed_before_the_code_is_copied():
    build = stages()[0]
    copy_pyproject = index_of(build, lambda w, r: w == "COPY" and r.split()[0] == "pyproject.toml")
    install_deps = index_of(build, lambda w, r: w == "RUN" and "pip install" in r
                            and "requirements" in r)
    copy_app = index_of(build, lambda w, r: w == "COPY" and r.split()[0] == "app")
    install_code = index_of(build, lambda w, r: w == "RUN" and "pip install --no-deps ." in r)
    assert copy_pyproject < install_deps < copy_app < install_code
    # Nothing but pyproject.toml is copied before the dependencies are installed.
    copies_before = [r for w, r in build[:install_deps] if w == "COPY"]
    assert copies_before == ["pyproject.toml ./"]


def test_torch_comes_from_the_cpu_wheel_index_unless_a_cuda_variant_is_asked_for():
    build = stages()[0]
    args = {rest.split("=")[0]: rest.partition("=")[2] for word, rest in build if word == "ARG"}
    assert args["TORCH_VARIANT"] == "cpu"
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/${TORCH_VARIANT}"
    torch_install = [r for w, r in build if w == "RUN" and "--index-url ${TORCH_INDEX_URL}" in r]
    assert torch_install and "torch-requirements.txt" in torch_install[0]
    # The PyPI install runs after, so torch is already satisfied by the chosen wheel.
    command = torch_install[0]
    assert command.index("--index-url ${TORCH_INDEX_URL}") < command.index(
        "pip install -r requirements.txt")


def test_image_environment_is_valid_settings_with_json_logs():
    fields = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in env_of(stages()[-1]).items() if k.startswith(ENV_PREFIX)}
    assert set(env) <= fields, set(env) - fields
    settings = load_settings(**{k[len(ENV_PREFIX):].lower(): v for k, v in env.items()})
    assert settings.log_format == "json"


def test_the_image_runs_unlearn_commands():
    runtime = stages()[-1]
    command = json.loads([rest for word, rest in runtime if word == "CMD"][-1])
    assert command[:2] == ["sh", "-c"]
    click_cli = get_command(cli)
    for run in (shlex.split(part) for part in command[2].split("&&")):
        assert run[0] == "unlearn"
        group, rest = click_cli, run[1:]
        while hasattr(group, "commands"):
            group = group.commands[rest[0]]
            rest = rest[1:]
        group.make_context(group.name, rest)
