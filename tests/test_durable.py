"""Durable execution in one process, on SQLite and PostgreSQL: taking a request is
exclusive, an attempt that lost its request cannot publish, requests left running are
requeued (or failed after max attempts), graceful release, version-number retries,
idempotency keys, cancellation, phases, and (PostgreSQL) jobs deferred in the filing
transaction and stalled-job recovery through procrastinate's heartbeats."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from app.audit.models import AuditEntry
from app.forgetting import execution, jobs, pipeline
from app.forget_requests.models import ForgetRequest
from app.forgetting.schemas import ForgetRequestCreate
from app.forgetting.service import file_request, submit_request
from app.forgetting.worker import Notifier
from app.main import create_app, start_embedded_worker
from app.registry import service as registry_service
from app.registry.models import ModelVersion
from tests.conftest import api_key, authorized, forget_body, make_ctx, make_settings


@pytest.fixture
def make_durable_ctx(tmp_path, database_url, feature_cache_dir, small_data, trained_state):
    contexts = []

    def factory(**overrides):
        context = make_ctx(make_settings(tmp_path, database_url, feature_cache_dir, **overrides),
                           small_data, trained_state)
        contexts.append(context)
        return context

    yield factory
    for context in contexts:
        context.close()


def file(ctx, **overrides) -> str:
    request, _ = submit_request(ctx.db, ctx.model_name, ForgetRequestCreate(**forget_body(**overrides)),
                                "test", ctx.settings.max_sample_ids, settings=ctx.settings,
                                data=ctx.model_data(ctx.model_name))
    return request.id


def load(ctx, request_id) -> ForgetRequest:
    with ctx.db.session() as session:
        return session.get(ForgetRequest, request_id)


def actions(ctx, request_id) -> list[str]:
    with ctx.db.session() as session:
        return list(session.scalars(select(AuditEntry.action)
                                    .where(AuditEntry.forget_request_id == request_id)
                                    .order_by(AuditEntry.id)))


def versions_of(ctx, request_id) -> list[ModelVersion]:
    with ctx.db.session() as session:
        return list(session.scalars(select(ModelVersion)
                                    .where(ModelVersion.forget_request_id == request_id)))


def job_rows(ctx) -> list:
    """The forget-request jobs (a worker running across minute 23 also defers the hourly
    job cleanup, which is not what these tests count)."""
    with ctx.db.session() as session:
        return session.execute(text(
            "SELECT id, queue_name, status, args, attempts FROM procrastinate_jobs "
            "WHERE task_name = :task ORDER BY id"), {"task": jobs.TASK_NAME}).all()


def wait_until(predicate, timeout: float = 30, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def assert_store_matches_registry(ctx) -> None:
    """Every stored artifact belongs to a version and every version's artifact verifies."""
    with ctx.db.session() as session:
        rows = list(session.scalars(select(ModelVersion)))
    assert sorted(ctx.store.keys()) == sorted(row.artifact_path for row in rows)
    for row in rows:
        ctx.store.get(row.artifact_path, row.artifact_sha256)


def test_taking_a_request_is_exclusive(make_durable_ctx):
    ctx = make_durable_ctx()
    request_id = file(ctx)
    assert execution.begin(ctx, request_id, "worker-a")
    assert not execution.begin(ctx, request_id, "worker-b")
    assert execution.claim_next(ctx, "worker-c") is None
    row = load(ctx, request_id)
    assert (row.status, row.worker_id, row.attempts) == ("running", "worker-a", 1)
    assert execution.run_request(ctx, request_id, "worker-d") == execution.SKIPPED


def test_requests_left_running_are_requeued_then_failed_after_max_attempts(make_durable_ctx):
    ctx = make_durable_ctx(max_attempts=2)
    request_id = file(ctx)
    assert execution.claim_next(ctx, "worker-a") == request_id
    assert execution.requeue_orphans(ctx, "worker:restarted") == 1
    row = load(ctx, request_id)
    assert (row.status, row.worker_id, row.attempts) == ("queued", None, 1)

    assert execution.claim_next(ctx, "worker-b") == request_id
    assert execution.requeue_orphans(ctx, "worker:restarted") == 1
    row = load(ctx, request_id)
    assert row.status == "failed"
    assert "abandoned after 2 attempt(s)" in row.error and "worker-b" in row.error
    assert actions(ctx, request_id) == [
        "forget_request.received", "forget_request.started", "forget_request.requeued",
        "forget_request.started", "forget_request.failed",
    ]
    assert versions_of(ctx, request_id) == []


def test_an_attempt_that_lost_its_request_publishes_nothing(make_durable_ctx):
    ctx = make_durable_ctx()
    request_id = file(ctx)
    execution.begin(ctx, request_id, "worker-a")
    execution.requeue_orphans(ctx, "worker:recovery")  # what stalled-job recovery does
    assert execution.begin(ctx, request_id, "worker-b")

    # The stalled attempt comes back: it stops at its first checkpoint.
    assert execution.execute_request(ctx, request_id, "worker-a") == execution.LOST
    row = load(ctx, request_id)
    assert (row.status, row.worker_id, row.result_version) == ("running", "worker-b", None)
    assert versions_of(ctx, request_id) == []
    assert_store_matches_registry(ctx)

    assert execution.execute_request(ctx, request_id, "worker-b") == execution.COMPLETED
    row = load(ctx, request_id)
    assert (row.status, row.attempts, row.result_version) == ("completed", 2, 2)
    assert len(versions_of(ctx, request_id)) == 1
    assert_store_matches_registry(ctx)


def test_publication_is_conditional_on_still_holding_the_request(make_durable_ctx,
                                                                  monkeypatch):
    """Lost between the last checkpoint and publication: the artifact is written, the
    publishing transaction finds the request taken, and the artifact is removed again."""
    ctx = make_durable_ctx()
    request_id = file(ctx)
    execution.begin(ctx, request_id, "worker-a")
    original = pipeline._publish_once

    def taken_just_before(ctx_, request_id_, *args, **kwargs):
        execution.requeue_orphans(ctx, "worker:recovery")
        execution.begin(ctx, request_id, "worker-b")
        return original(ctx_, request_id_, *args, **kwargs)

    monkeypatch.setattr(pipeline, "_publish_once", taken_just_before)
    assert execution.execute_request(ctx, request_id, "worker-a") == execution.LOST
    assert versions_of(ctx, request_id) == []
    assert_store_matches_registry(ctx)
    assert load(ctx, request_id).worker_id == "worker-b"


def test_graceful_stop_releases_the_request_in_hand(make_durable_ctx):
    ctx = make_durable_ctx(test_execution_delay_s=30)
    request_id = file(ctx)
    worker = start_embedded_worker(ctx, Notifier(), Notifier())
    try:
        wait_until(lambda: load(ctx, request_id).status == "running", 30, "the worker")
    finally:
        worker.stop(grace_s=0.2)
    row = load(ctx, request_id)
    assert (row.status, row.worker_id, row.attempts) == ("queued", None, 0)
    assert actions(ctx, request_id)[-1] == "forget_request.released"
    assert_store_matches_registry(ctx)
    if ctx.settings.uses_job_engine:  # procrastinate puts the job back for another worker
        assert [(r.status, r.args["request_id"]) for r in job_rows(ctx)] == \
            [("todo", request_id)]


def test_version_number_collision_is_retried(make_durable_ctx, monkeypatch):
    """Two publications that read the same max version: the loser's insert violates the
    unique (model, version) constraint, rolls back, and retries with the next number."""
    ctx = make_durable_ctx()
    original = registry_service.next_version_number
    calls = {"n": 0}

    def stale_first(session, model_name):
        calls["n"] += 1
        return 1 if calls["n"] == 1 else original(session, model_name)  # 1 is taken

    monkeypatch.setattr(registry_service, "next_version_number", stale_first)
    request_id = file(ctx)
    assert execution.run_request(ctx, request_id, "worker-a") == execution.COMPLETED
    row = load(ctx, request_id)
    assert (row.status, row.result_version) == ("completed", 2)
    assert calls["n"] == 2
    assert actions(ctx, request_id).count("forget_request.completed") == 1


def test_idempotency_key_posted_concurrently_files_one_request(client):
    headers = {"Idempotency-Key": "case-0042-attempt"}

    def post(_):
        return client.post("/forget-requests", json=forget_body(), headers=headers)

    with ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(post, range(10)))
    assert {r.status_code for r in responses} == {202}, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == 9
    assert len(client.get("/forget-requests").json()["items"]) == 1
    received = client.get("/audit-log", params={"action": "forget_request.received"}).json()
    assert len(received["items"]) == 1
    ctx = client.app.state.ctx
    if ctx.settings.uses_job_engine:  # the losers' transactions took their jobs with them
        assert [r.args["request_id"] for r in job_rows(ctx)] == [responses[0].json()["id"]]

    conflict = client.post("/forget-requests", json=forget_body(classes=[3]), headers=headers)
    assert conflict.status_code == 409
    assert conflict.json()["error"]["field"] == "Idempotency-Key"
    other = client.post("/forget-requests", json=forget_body(),
                        headers={"Idempotency-Key": "another"})
    assert other.status_code == 202 and other.json()["id"] != responses[0].json()["id"]


def test_get_shows_phase_attempts_worker_and_progress_while_running(make_durable_ctx):
    ctx = make_durable_ctx(test_execution_delay_s=3)
    with authorized(TestClient(create_app(ctx)), ctx) as client:
        request_id = client.post("/forget-requests", json=forget_body()).json()["id"]
        seen = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            body = client.get(f"/forget-requests/{request_id}").json()
            if body["status"] == "running" and body["progress"] > 0:
                seen = body
                break
            time.sleep(0.1)
        assert seen is not None
        assert seen["attempts"] == 1 and seen["queue"] == "light"
        assert seen["phase"] == "delay (test only)"
        assert seen["worker_id"].startswith(execution.process_name() + ":")
        assert seen["heartbeat_at"] is not None
        assert 0 < seen["progress"] < 1
        client.app.state.worker.stop(grace_s=0)  # don't wait out the delay


def test_each_phase_is_stored_and_logged_with_the_request_id(make_durable_ctx, caplog,
                                                             monkeypatch):
    ctx = make_durable_ctx()
    request_id = file(ctx, method="finetune", params={"epochs": 2, "batch_size": 256})
    phases = []
    original = execution.ExecutionProgress._write

    def spy(self, **values):
        original(self, **values)
        if "phase" in values:
            phases.append((values["phase"], load(ctx, request_id).phase))

    monkeypatch.setattr(execution.ExecutionProgress, "_write", spy)
    monkeypatch.setattr(execution, "PHASE_WRITE_S", 0.0)  # store every phase, however short
    with caplog.at_level(logging.INFO, logger="unlearn.worker"):
        assert execution.run_request(ctx, request_id, "worker-a") == execution.COMPLETED
    expected = ["metrics", "training epoch 1/2", "training epoch 2/2", "metrics", "publishing"]
    assert [stored for _, stored in phases] == expected  # each was on the row while it ran
    logged = [r.getMessage() for r in caplog.records
              if r.name == "unlearn.worker" and ": phase " in r.getMessage()]
    assert len(logged) == len(expected)
    assert all(request_id in line for line in logged)
    row = load(ctx, request_id)
    # Finished and published either way; whether two epochs of fine-tuning meet the class
    # criterion is the verification tests' business, not this one's.
    assert row.status in ("completed", "unverified")
    assert (row.phase, row.progress, row.queue) == ("publishing", 1.0, "heavy")


# --- cancellation -----------------------------------------------------------------


def test_cancel_a_queued_request(make_durable_ctx):
    ctx = make_durable_ctx()
    app = create_app(ctx, start_worker=False)
    with authorized(TestClient(app), ctx) as client:
        request_id = client.post("/forget-requests", json=forget_body()).json()["id"]
        response = client.post(f"/forget-requests/{request_id}/cancel")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "cancelled"
        again = client.post(f"/forget-requests/{request_id}/cancel")
        assert again.status_code == 409 and again.json()["error"]["field"] == "request_id"
        missing = client.post("/forget-requests/no-such-request/cancel")
        assert missing.status_code == 404
        auditor = {"Authorization": f"Bearer {api_key(ctx, 'auditor', name='aud')}"}
        assert client.post(f"/forget-requests/{request_id}/cancel",
                           headers=auditor).status_code == 403
    assert execution.run_request(ctx, request_id, "worker-a") == execution.SKIPPED
    assert actions(ctx, request_id) == ["forget_request.received",
                                        "forget_request.cancelled"]
    if ctx.settings.uses_job_engine:
        assert [r.status for r in job_rows(ctx)] == ["cancelled"]
    assert versions_of(ctx, request_id) == []


def test_cancel_a_running_request_publishes_nothing(make_durable_ctx, caplog):
    caplog.set_level(logging.INFO, logger="unlearn.worker")
    ctx = make_durable_ctx(test_execution_delay_s=30)
    with authorized(TestClient(create_app(ctx)), ctx) as client:
        officer = {"Authorization": f"Bearer {api_key(ctx, 'privacy_officer', name='dpo')}"}
        request_id = client.post("/forget-requests", json=forget_body(),
                                 headers=officer).json()["id"]
        wait_until(lambda: client.get(f"/forget-requests/{request_id}").json()["progress"] > 0,
                   30, "the request to run")
        started = time.monotonic()
        response = client.post(f"/forget-requests/{request_id}/cancel", headers=officer)
        assert response.status_code == 200 and response.json()["status"] == "cancelled"
        # The running attempt notices at its next checkpoint, long before its 30 s end.
        wait_until(lambda: any("publishes nothing" in r.getMessage() for r in caplog.records),
                   20, "the running attempt to stop")
        body = client.get(f"/forget-requests/{request_id}").json()
        assert body["status"] == "cancelled" and body["result_version"] is None
        assert time.monotonic() - started < 20
    assert versions_of(ctx, request_id) == []
    assert_store_matches_registry(ctx)
    trail = actions(ctx, request_id)
    assert trail == ["forget_request.received", "forget_request.started",
                     "forget_request.cancelled"]
    if ctx.settings.uses_job_engine:
        assert [r.status for r in job_rows(ctx)] in (["succeeded"], ["aborted"])


# --- PostgreSQL: procrastinate jobs -------------------------------------------------


@pytest.fixture
def pg_ctx(make_durable_ctx, database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("procrastinate jobs exist on PostgreSQL only")
    return make_durable_ctx


def test_a_request_and_its_job_commit_or_roll_back_together(pg_ctx):
    ctx = pg_ctx()
    body = ForgetRequestCreate(**forget_body())
    with pytest.raises(RuntimeError, match="after filing"):
        with ctx.db.session() as session:
            file_request(session, ctx.model_name, body, "test", 10_000,
                         data=ctx.model_data(ctx.model_name))
            assert len(session.execute(text("SELECT id FROM procrastinate_jobs")).all()) == 1
            raise RuntimeError("the caller failed after filing")
    assert job_rows(ctx) == []
    with ctx.db.session() as session:
        assert session.scalars(select(ForgetRequest)).all() == []

    light = file(ctx)
    heavy = file(ctx, method="ssd", params={"alpha": 10})
    rows = job_rows(ctx)
    assert [(r.queue_name, r.args, r.status) for r in rows] == [
        ("light", {"request_id": light}, "todo"), ("heavy", {"request_id": heavy}, "todo")]
    assert load(ctx, light).job_id == rows[0].id and load(ctx, heavy).queue == "heavy"


def _stall(ctx, request_id: str, execution_id: str) -> int:
    """What a worker that stopped heartbeating leaves: its job 'doing' under a procrastinate
    worker whose last heartbeat is an hour old, and the request running under its attempt."""
    with ctx.db.session() as session:
        worker = session.execute(text(
            "INSERT INTO procrastinate_workers (last_heartbeat) "
            "VALUES (now() - interval '1 hour') RETURNING id")).scalar_one()
        session.execute(text("UPDATE procrastinate_jobs SET status = 'doing', worker_id = :w, "
                             "attempts = attempts WHERE id = :j"),
                        {"w": worker, "j": load(ctx, request_id).job_id})
    assert execution.begin(ctx, request_id, execution_id)
    return worker


def test_stalled_job_is_retried_then_failed_after_max_attempts(pg_ctx):
    ctx = pg_ctx(max_attempts=2)
    request_id = file(ctx)

    async def sweep() -> int:
        app = jobs.build_job_app(ctx, "sweeper")
        async with app.open_async():
            return await jobs.retry_stalled_jobs(app, ctx, "worker:sweeper")

    assert asyncio.run(sweep()) == 0  # nothing stalled yet
    _stall(ctx, request_id, "worker-a")
    assert asyncio.run(sweep()) == 1
    row = load(ctx, request_id)
    assert (row.status, row.worker_id, row.attempts) == ("queued", None, 1)
    assert [r.status for r in job_rows(ctx)] == ["todo"]  # retried: a worker will fetch it
    assert asyncio.run(sweep()) == 0  # and only once

    _stall(ctx, request_id, "worker-b")
    assert asyncio.run(sweep()) == 1
    row = load(ctx, request_id)
    assert row.status == "failed" and "abandoned after 2 attempt(s)" in row.error
    assert [r.status for r in job_rows(ctx)] == ["failed"]
    assert actions(ctx, request_id) == [
        "forget_request.received", "forget_request.started", "forget_request.requeued",
        "forget_request.started", "forget_request.failed",
    ]


def test_a_running_request_whose_job_ended_is_requeued_with_a_new_job(pg_ctx):
    """A resumed stalled worker may close the job another worker runs; should that one die
    too, the request must still run again."""
    ctx = pg_ctx()
    request_id = file(ctx)
    first_job = load(ctx, request_id).job_id
    assert execution.begin(ctx, request_id, "worker-a")
    with ctx.db.session() as session:
        session.execute(text("UPDATE procrastinate_jobs SET status = 'succeeded' "
                             "WHERE id = :j"), {"j": first_job})
    assert jobs.recover_orphaned_requests(ctx, "worker:sweeper") == 0  # attempt still alive
    with ctx.db.session() as session:
        session.execute(text("UPDATE forget_requests SET heartbeat_at = now() - "
                             "interval '1 hour' WHERE id = :r"), {"r": request_id})
    assert jobs.recover_orphaned_requests(ctx, "worker:sweeper") == 1
    row = load(ctx, request_id)
    assert (row.status, row.worker_id) == ("queued", None) and row.job_id != first_job
    assert [(r.id, r.status) for r in job_rows(ctx)] == [(first_job, "succeeded"),
                                                         (row.job_id, "todo")]
    assert jobs.recover_orphaned_requests(ctx, "worker:sweeper") == 0
    assert actions(ctx, request_id)[-1] == "forget_request.requeued"
