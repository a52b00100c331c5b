"""The job engine's edges: migration 0007 creates (and removes) procrastinate's schema on
PostgreSQL only, the worker command refuses what it cannot do, and the stall settings
must leave room for missed heartbeats."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text
from typer.testing import CliRunner

from app.cli import cli
from app.core.config import ConfigError, load_settings
from app.db.migrations import alembic_config, upgrade


def procrastinate_tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return {name for name in inspect(engine).get_table_names()
                if name.startswith("procrastinate_")}
    finally:
        engine.dispose()


def test_migration_0007_creates_procrastinate_schema_on_postgresql_only(database_url):
    upgrade(database_url)
    tables = procrastinate_tables(database_url)
    engine = create_engine(database_url)
    columns = {c["name"] for c in inspect(engine).get_columns("forget_requests")}
    assert {"phase", "queue", "job_id"} <= columns and "lease_expires_at" not in columns
    if database_url.startswith("postgresql"):
        assert {"procrastinate_jobs", "procrastinate_workers", "procrastinate_events"} <= tables
        with engine.connect() as connection:  # procrastinate's defer function is callable
            assert connection.execute(text(
                "SELECT count(*) FROM pg_proc WHERE proname = 'procrastinate_defer_jobs_v1'"
            )).scalar_one() == 1
    else:
        assert tables == set()
    engine.dispose()

    command.downgrade(alembic_config(database_url), "0004")
    assert procrastinate_tables(database_url) == set()
    engine = create_engine(database_url)
    columns = {c["name"] for c in inspect(engine).get_columns("forget_requests")}
    engine.dispose()
    assert "lease_expires_at" in columns and "phase" not in columns
    upgrade(database_url)  # and up again, cleanly
    assert bool(procrastinate_tables(database_url)) == database_url.startswith("postgresql")


def test_worker_command_refuses_unknown_queues_and_sqlite(monkeypatch, tmp_path):
    runner = CliRunner()
    unknown = runner.invoke(cli, ["worker", "--queues", "light,gpu"])
    assert unknown.exit_code == 2
    assert "queues must be among heavy, light" in unknown.output

    monkeypatch.setenv("UNLEARN_DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite'}")
    from app.core.config import get_settings
    get_settings.cache_clear()
    try:
        sqlite = runner.invoke(cli, ["worker", "--queues", "light"])
    finally:
        get_settings.cache_clear()
    assert sqlite.exit_code == 2
    assert "needs PostgreSQL" in sqlite.output


def test_stall_limit_must_leave_room_for_missed_heartbeats():
    with pytest.raises(ConfigError, match="UNLEARN_STALLED_AFTER_S=15.0 must be at least twice UNLEARN_HEARTBEAT_S=10.0"):
        load_settings(heartbeat_s=10, stalled_after_s=15)
    settings = load_settings(heartbeat_s=0.3, stalled_after_s=1.5)
    assert settings.stalled_after_s == 1.5
