"""docker-compose.yml matches the code: the services it must run, health checks on every
long-running one, every UNLEARN_* variable it sets is a setting that parses, and every
command our image runs is an `unlearn` command."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import uuid

import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError
from typer.main import get_command

from app.cli import cli
from app.core.config import ENV_PREFIX, Settings, load_settings
from app.db.migrations import upgrade
from app.db.roles import grant_app_role
from tests.conftest import ROOT, fresh_postgres_database


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


def _database_user(service: dict) -> str:
    return make_url(service["environment"]["UNLEARN_DATABASE_URL"]).username


def _runs(service: dict) -> list[list[str]]:
    words = service["command"]
    if words[:2] == ["sh", "-c"]:
        return [shlex.split(part) for part in words[2].split("&&")]
    return [words]


def test_migrations_run_as_the_owner_and_the_service_as_the_app_role():
    """Issue 15: the app role owns nothing; only `migrate` connects as the owner, and it
    grants the app role its rights after upgrading, before anything runs as it."""
    services = compose()["services"]
    migrate = services["migrate"]
    owner = _database_user(migrate)
    runs = _runs(migrate)
    assert [run[1:3] for run in runs] == [["db", "upgrade"], ["db", "grant-app-role"],
                                          ["bootstrap"]]
    app_role = runs[1][3]
    assert app_role != owner
    ours = [name for name, service in services.items()
            if service.get("build") is not None and name != "migrate"]
    assert set(ours) == {"api", "worker-light", "worker-heavy"}
    for name in ours:
        assert _database_user(services[name]) == app_role, name
    # The postgres service creates both roles from the init script, and no service of
    # ours connects as the superuser.
    postgres = services["postgres"]
    superuser = postgres["environment"]["POSTGRES_USER"]
    assert superuser not in {owner, app_role}
    init = [volume.split(":") for volume in postgres["volumes"]
            if volume.startswith("./deploy/postgres/init-roles.sh:")]
    assert len(init) == 1 and init[0][1].startswith("/docker-entrypoint-initdb.d/")
    script = (ROOT / init[0][0]).read_text()
    # Its default role names are the ones the URLs use.
    assert f"DB_OWNER_ROLE:-{owner}" in script and f"DB_APP_ROLE:-{app_role}" in script


def test_every_process_shares_the_secrets_and_the_checkpoints_stay_off_the_database():
    services = compose()["services"]
    ours = {name: service for name, service in services.items()
            if service.get("build") is not None}
    for variable in ("UNLEARN_SIGNING_KEY_PATH", "UNLEARN_SUBJECT_KEY_PATH",
                     "UNLEARN_WEBHOOK_SECRET_PATH", "UNLEARN_AUDIT_CHECKPOINT_PATH"):
        paths = {service["environment"][variable] for service in ours.values()}
        assert len(paths) == 1, variable
        folder = paths.pop().rsplit("/", 1)[0]
        for name, service in ours.items():
            assert any(volume.endswith(":" + folder) for volume in service["volumes"]), \
                (name, variable)
    checkpoints = ours["api"]["environment"]["UNLEARN_AUDIT_CHECKPOINT_PATH"].rsplit("/", 1)[0]
    checkpoint_volume = next(volume.split(":")[0] for volume in ours["api"]["volumes"]
                             if volume.endswith(":" + checkpoints))
    assert not any(volume.startswith(checkpoint_volume + ":")
                   for volume in services["postgres"]["volumes"])
    dockerfile = (ROOT / "Dockerfile").read_text()
    for folder in ("/srv/keys", "/srv/checkpoints", "/srv/datasets"):
        assert folder in dockerfile  # made in the image, so the volume is the user's


def test_the_init_script_makes_roles_that_migrate_and_serve(tmp_path):
    """Runs deploy/postgres/init-roles.sh as the postgres image would (psql as the
    superuser, on a fresh database), with role names of its own, then migrates as the
    owner and checks that the app role reads and appends the audit log but cannot
    rewrite it."""
    if shutil.which("psql") is None:
        pytest.skip("psql is not installed")
    suffix = uuid.uuid4().hex[:8]
    owner, app = f"owner_{suffix}", f"app_{suffix}"
    # The script makes both roles; they are dropped with the database afterwards.
    with fresh_postgres_database(drop_roles=(app, owner)) as url:
        admin_url = make_url(url)
        env = {**os.environ, "POSTGRES_USER": admin_url.username,
               "POSTGRES_DB": admin_url.database,
               "PGHOST": admin_url.host or "127.0.0.1", "PGPORT": str(admin_url.port or 5432),
               "DB_OWNER_ROLE": owner, "DB_APP_ROLE": app,
               "DB_OWNER_PASSWORD": "owner-secret", "DB_APP_PASSWORD": "app-secret"}
        if admin_url.password:
            env["PGPASSWORD"] = admin_url.password
        ran = subprocess.run(["sh", str(ROOT / "deploy/postgres/init-roles.sh")], env=env,
                             capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0, ran.stderr
        as_owner = admin_url.set(username=owner, password="owner-secret")
        as_app = admin_url.set(username=app, password="app-secret")
        upgrade(as_owner.render_as_string(hide_password=False))
        owner_engine = create_engine(as_owner)
        grant_app_role(owner_engine, app)
        owner_engine.dispose()
        app_engine = create_engine(as_app)
        with app_engine.connect() as connection:
            assert connection.scalar(text("SELECT count(*) FROM audit_log")) == 0
            assert not connection.scalar(text(
                "SELECT rolsuper OR rolcreatedb OR rolcreaterole FROM pg_roles "
                "WHERE rolname = current_user"))
            with pytest.raises(ProgrammingError):
                connection.execute(text("DELETE FROM audit_log"))
        app_engine.dispose()
