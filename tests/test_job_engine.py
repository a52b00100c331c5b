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


def test_cleanup_removes_only_finished_jobs_older_than_the_retention(database_url):
    """Issue 12: procrastinate's tables do not grow for ever. The hourly cleanup task
    (called here directly, not waited for) removes jobs finished longer ago than
    UNLEARN_JOB_RETENTION_HOURS with their events; recent ones, queued and running ones
    stay, and so do the service's forget_requests rows."""
    if not database_url.startswith("postgresql"):
        pytest.skip("procrastinate runs on PostgreSQL only")
    import asyncio
    from types import SimpleNamespace

    from procrastinate import job_context

    from app.forgetting import jobs

    upgrade(database_url)
    engine = create_engine(database_url)

    def job(status_path: tuple[str, ...], hours_ago: float) -> int:
        """A job taken through ``status_path`` (procrastinate's triggers record an event
        per change), then its events moved ``hours_ago`` into the past."""
        with engine.begin() as connection:
            job_id = connection.execute(text(
                "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
                "VALUES ('light', :task, '{}') RETURNING id"), {"task": jobs.TASK_NAME}
            ).scalar_one()
            for status in status_path:
                connection.execute(text("UPDATE procrastinate_jobs SET status = :status "
                                        "WHERE id = :id"), {"status": status, "id": job_id})
            connection.execute(text(
                "UPDATE procrastinate_events SET at = now() - make_interval(hours => :h) "
                "WHERE job_id = :id"), {"h": hours_ago, "id": job_id})
        return job_id

    retention = 24
    old_succeeded = job(("doing", "succeeded"), retention + 1)
    old = {old_succeeded} | {job(path, retention + 1) for path in (
        ("doing", "failed"), ("cancelled",), ("doing", "aborted"))}
    kept = {job(("doing", "succeeded"), retention - 1), job(("doing", "failed"), 0),
            job((), retention + 100), job(("doing",), retention + 100)}
    from sqlalchemy.orm import Session

    from app.forget_requests.models import ForgetRequest

    with Session(engine) as session, session.begin():  # a request's record, its job old
        session.add(ForgetRequest(
            id="cleanup-survivor", model_name="mnist-cnn", source_version=1,
            method="output_dampening", requested_by="dpo", subject_reference="GDPR-1",
            status="completed", job_id=old_succeeded))
    with engine.begin() as connection:
        requests_before = connection.execute(text(
            "SELECT id, status, job_id FROM forget_requests")).all()

    settings = load_settings(database_url=database_url, job_retention_hours=retention)
    app = jobs.build_job_app(SimpleNamespace(settings=settings), "test-cleanup")
    assert app.periodic_registry.periodic_tasks, "the cleanup is scheduled periodically"
    task = app.tasks[jobs.CLEANUP_TASK]
    assert task.queue == jobs.MAINTENANCE_QUEUE

    async def clean() -> None:
        async with app.open_async():
            context = job_context.JobContext(app=app, job=None, start_timestamp=0,
                                             abort_reason=lambda: None)
            await task(context, timestamp=0)

    asyncio.run(clean())
    with engine.connect() as connection:
        remaining = set(connection.execute(text("SELECT id FROM procrastinate_jobs")).scalars())
        orphan_events = connection.execute(text(
            "SELECT count(*) FROM procrastinate_events WHERE job_id = ANY(:ids)"),
            {"ids": list(old)}).scalar_one()
        requests_after = connection.execute(text(
            "SELECT id, status, job_id FROM forget_requests")).all()
    engine.dispose()
    assert kept <= remaining
    assert not old & remaining
    assert orphan_events == 0
    assert requests_after == requests_before == [("cleanup-survivor", "completed", old_succeeded)]


def test_every_worker_takes_the_cleanup_queue():
    from types import SimpleNamespace

    from app.forgetting.jobs import MAINTENANCE_QUEUE, JobWorker

    settings = load_settings(job_retention_hours=1)
    assert JobWorker(SimpleNamespace(settings=settings), queues=["heavy"]).queues == \
        ["heavy", MAINTENANCE_QUEUE]
    with pytest.raises(ConfigError, match="JOB_RETENTION_HOURS"):
        load_settings(job_retention_hours=0)
