"""Durable execution in one process, on SQLite and PostgreSQL: leases and heartbeats, lease
recovery and max attempts, a worker that lost its lease cannot publish, graceful release,
version-number retries, idempotency keys, and what GET /forget-requests/{id} shows."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from app.audit.models import AuditEntry
from app.db.base import utcnow
from app.forgetting import execution
from app.forgetting.models import ForgetRequest
from app.forgetting.schemas import ForgetRequestCreate
from app.forgetting.service import submit_request
from app.forgetting.worker import Notifier, Worker
from app.main import create_app
from app.registry import service as registry_service
from app.registry.models import ModelVersion
from tests.conftest import authorized, forget_body, make_ctx, make_settings


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
                                "test", ctx.settings.max_sample_ids, settings=ctx.settings)
    return request.id


def load(ctx, request_id) -> ForgetRequest:
    with ctx.db.session() as session:
        return session.get(ForgetRequest, request_id)


def expire_lease(ctx, request_id) -> None:
    """What a vanished worker leaves behind: a lease in the past."""
    with ctx.db.session() as session:
        session.execute(update(ForgetRequest).where(ForgetRequest.id == request_id)
                        .values(lease_expires_at=utcnow() - execution.dt.timedelta(seconds=1)))


def actions(ctx, request_id) -> list[str]:
    with ctx.db.session() as session:
        return list(session.scalars(select(AuditEntry.action)
                                    .where(AuditEntry.forget_request_id == request_id)
                                    .order_by(AuditEntry.id)))


def versions_of(ctx, request_id) -> list[ModelVersion]:
    with ctx.db.session() as session:
        return list(session.scalars(select(ModelVersion)
                                    .where(ModelVersion.forget_request_id == request_id)))


def assert_store_matches_registry(ctx) -> None:
    """Every stored artifact belongs to a version and every version's artifact verifies."""
    with ctx.db.session() as session:
        rows = list(session.scalars(select(ModelVersion)))
    assert sorted(ctx.store.keys()) == sorted(row.artifact_path for row in rows)
    for row in rows:
        ctx.store.get(row.artifact_path, row.artifact_sha256)


def test_claim_is_exclusive_and_takes_a_lease(make_durable_ctx):
    ctx = make_durable_ctx(lease_s=30)
    request_id = file(ctx)
    assert execution.claim_next(ctx, "worker-a") == request_id
    assert execution.claim_next(ctx, "worker-b") is None
    row = load(ctx, request_id)
    assert (row.status, row.worker_id, row.attempts) == ("running", "worker-a", 1)
    assert 25 < (row.lease_expires_at - utcnow()).total_seconds() <= 30
    assert execution.renew_lease(ctx, request_id, "worker-a")
    assert not execution.renew_lease(ctx, request_id, "worker-b")


def test_expired_lease_is_requeued_then_failed_after_max_attempts(make_durable_ctx):
    ctx = make_durable_ctx(max_attempts=2)
    request_id = file(ctx)
    assert execution.claim_next(ctx, "worker-a") == request_id
    assert execution.recover_expired(ctx, "worker-x") == 0  # lease still valid
    expire_lease(ctx, request_id)
    assert execution.recover_expired(ctx, "worker-x") == 1
    row = load(ctx, request_id)
    assert (row.status, row.worker_id, row.attempts) == ("queued", None, 1)

    assert execution.claim_next(ctx, "worker-b") == request_id
    expire_lease(ctx, request_id)
    assert execution.recover_expired(ctx, "worker-x") == 1
    row = load(ctx, request_id)
    assert row.status == "failed"
    assert "abandoned after 2 attempt(s)" in row.error and "worker-b" in row.error
    assert actions(ctx, request_id) == [
        "forget_request.received", "forget_request.started", "forget_request.requeued",
        "forget_request.started", "forget_request.failed",
    ]
    assert versions_of(ctx, request_id) == []


def test_a_worker_that_lost_its_lease_publishes_nothing(make_durable_ctx):
    ctx = make_durable_ctx()
    request_id = file(ctx)
    execution.claim_next(ctx, "worker-a")
    expire_lease(ctx, request_id)
    execution.recover_expired(ctx, "worker-b")
    assert execution.claim_next(ctx, "worker-b") == request_id

    execution.execute_request(ctx, request_id, "worker-a")  # the vanished worker comes back
    row = load(ctx, request_id)
    assert (row.status, row.worker_id, row.result_version) == ("running", "worker-b", None)
    assert versions_of(ctx, request_id) == []
    assert_store_matches_registry(ctx)  # its artifact was removed again

    execution.execute_request(ctx, request_id, "worker-b")
    row = load(ctx, request_id)
    assert (row.status, row.attempts, row.result_version) == ("completed", 2, 2)
    assert len(versions_of(ctx, request_id)) == 1
    assert_store_matches_registry(ctx)


def test_heartbeats_keep_a_long_request_leased(make_durable_ctx):
    ctx = make_durable_ctx(lease_s=0.6, heartbeat_s=0.1, test_execution_delay_s=1.5)
    request_id = file(ctx)
    execution.claim_next(ctx, "worker-a")
    runner = threading.Thread(target=execution.execute_request, args=(ctx, request_id, "worker-a"))
    runner.start()
    recovered = 0
    progress_seen = 0.0
    while runner.is_alive():  # another worker keeps looking for expired leases
        recovered += execution.recover_expired(ctx, "worker-b")
        progress_seen = max(progress_seen, load(ctx, request_id).progress)
        time.sleep(0.05)
    runner.join()
    assert recovered == 0
    row = load(ctx, request_id)
    assert (row.status, row.attempts) == ("completed", 1)
    assert 0 < progress_seen  # progress was visible while it ran


def test_graceful_stop_releases_the_request_in_hand(make_durable_ctx):
    ctx = make_durable_ctx(test_execution_delay_s=30)
    request_id = file(ctx)
    worker = Worker(ctx, Notifier(), poll_interval=0.05, worker_id="worker-a")
    worker.start()
    deadline = time.monotonic() + 20
    while load(ctx, request_id).status != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.stop(grace_s=0.2)
    assert not worker._thread.is_alive()
    row = load(ctx, request_id)
    assert (row.status, row.worker_id, row.attempts) == ("queued", None, 0)
    assert actions(ctx, request_id)[-1] == "forget_request.released"
    assert_store_matches_registry(ctx)


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
    execution.claim_next(ctx, "worker-a")
    execution.execute_request(ctx, request_id, "worker-a")
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

    conflict = client.post("/forget-requests", json=forget_body(classes=[3]), headers=headers)
    assert conflict.status_code == 409
    assert conflict.json()["error"]["field"] == "Idempotency-Key"
    other = client.post("/forget-requests", json=forget_body(),
                        headers={"Idempotency-Key": "another"})
    assert other.status_code == 202 and other.json()["id"] != responses[0].json()["id"]


def test_get_shows_attempts_worker_and_progress_while_running(make_durable_ctx):
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
        assert seen["attempts"] == 1
        assert seen["worker_id"] == client.app.state.worker.worker_id
        assert seen["lease_expires_at"] is not None and seen["heartbeat_at"] is not None
        assert 0 < seen["progress"] < 1
        client.app.state.worker.stop(grace_s=0)  # don't wait out the delay
