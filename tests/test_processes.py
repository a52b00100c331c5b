"""Fault and concurrency tests with real processes.

- kill -9 a worker mid-request: another worker completes the request, exactly once;
- SIGSTOP a worker mid-request past the stall limit: another worker retries and completes
  the request; the stalled one, resumed, publishes nothing;
- kill -9 the API process (embedded worker) mid-request, restart it: the request completes;
- three workers and two API processes on PostgreSQL: thirty concurrent requests, thirty
  completions, thirty distinct versions, a complete audit trail.
After each: every stored artifact belongs to a version, every version's artifact verifies,
and no temporary (half-written) file is left visible.
"""

from __future__ import annotations

import signal
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import select

from app.audit.models import AuditEntry
from app.forget_requests.models import ForgetRequest
from app.forgetting.schemas import ForgetRequestCreate
from app.forgetting.service import submit_request
from app.registry.models import ModelVersion
from tests.conftest import api_key, fresh_postgres_database, forget_body, \
    make_ctx, make_settings
from tests.processes import ApiProcess, start_worker, wait_for

# Short, so that recovery after a kill or a stall takes seconds: procrastinate workers
# heartbeat every 0.3 s, and one silent for 1.5 s is stalled.
FAST_RECOVERY = {"heartbeat_s": 0.3, "stalled_after_s": 1.5}


@pytest.fixture
def postgres_url():
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'unlearn.db'}"


def prepared(tmp_path, url, feature_cache_dir, small_data, trained_state):
    """A migrated database with version 1 registered, as the processes will see it, and
    MNIST registered once here (each process would otherwise register it on first use,
    all of them at once)."""
    from app.datasets.service import ensure_mnist_dataset

    ctx = make_ctx(make_settings(tmp_path, url, feature_cache_dir), small_data, trained_state)
    ensure_mnist_dataset(ctx.db, ctx.settings)
    return ctx


def load(ctx, request_id) -> ForgetRequest:
    with ctx.db.session() as session:
        return session.get(ForgetRequest, request_id)


def audit_actions(ctx, request_id) -> list[tuple[str, str]]:
    with ctx.db.session() as session:
        rows = session.execute(select(AuditEntry.action, AuditEntry.actor)
                               .where(AuditEntry.forget_request_id == request_id)
                               .order_by(AuditEntry.id)).all()
    return [(action, actor) for action, actor in rows]


def assert_no_orphans_or_partial_files(ctx) -> list[ModelVersion]:
    with ctx.db.session() as session:
        versions = list(session.scalars(select(ModelVersion).order_by(ModelVersion.version)))
    assert sorted(ctx.store.keys()) == sorted(v.artifact_path for v in versions)
    for version in versions:
        ctx.store.get(version.artifact_path, version.artifact_sha256)  # sha256 verified
    leftovers = [p for p in ctx.store.root.rglob("*") if p.is_file() and p.name.startswith(".tmp")]
    assert leftovers == []
    return versions


def running_with_progress(ctx, request_id):
    row = load(ctx, request_id)
    return row if row.status == "running" and row.progress > 0 else None


FINISHED = ("completed", "unverified", "failed")


def first_worker_mid_request(tmp_path, url, feature_cache_dir, small_data, trained_state, *,
                             log_name: str, delay_s: float):
    """A request filed and taken by a first worker slowed down by ``delay_s``, caught
    mid-request: returns (ctx, request ID, the worker process, the request as it ran)."""
    ctx = prepared(tmp_path, url, feature_cache_dir, small_data, trained_state)
    request, _ = submit_request(ctx.db, ctx.model_name, ForgetRequestCreate(**forget_body()),
                                "test", ctx.settings.max_sample_ids, settings=ctx.settings,
                                data=ctx.model_data(ctx.model_name))
    worker = start_worker(ctx.settings, tmp_path / log_name, **FAST_RECOVERY,
                          test_execution_delay_s=delay_s)
    try:
        victim = wait_for(lambda: running_with_progress(ctx, request.id), 120,
                          "the first worker to be mid-request")
    except BaseException:
        worker.close()
        raise
    return ctx, request.id, worker, victim


def second_worker(ctx, tmp_path, log_name: str):
    """The worker that takes the request over (fast: no test delay to speak of)."""
    return start_worker(ctx.settings, tmp_path / log_name, **FAST_RECOVERY,
                        test_execution_delay_s=0.5)


def finished_elsewhere(ctx, request_id, victim, what: str) -> ForgetRequest:
    """Wait for the request to finish; it must have completed on its second attempt, not
    under the first worker's execution."""
    done = wait_for(lambda: (row := load(ctx, request_id)).status in FINISHED and row, 120,
                    what)
    assert done.status == "completed", done.error
    assert done.attempts == 2 and done.worker_id != victim.worker_id
    return done


def assert_retried_once(ctx, request_id, victim) -> None:
    """The audit trail of a first attempt lost and a second completed, and exactly one
    version published for the request."""
    trail = audit_actions(ctx, request_id)
    assert [action for action, _ in trail] == [
        "forget_request.received", "forget_request.started", "forget_request.requeued",
        "forget_request.started", "forget_request.completed",
    ]
    assert trail[1][1] == f"worker:{victim.worker_id}"
    versions = assert_no_orphans_or_partial_files(ctx)
    assert [v.forget_request_id for v in versions] == [None, request_id]  # exactly once


@pytest.mark.slow
def test_killed_worker_request_completes_exactly_once_on_another(
        tmp_path, postgres_url, feature_cache_dir, small_data, trained_state):
    ctx, request_id, first, victim = first_worker_mid_request(
        tmp_path, postgres_url, feature_cache_dir, small_data, trained_state,
        log_name="worker-1.log", delay_s=60)
    second = None
    try:
        # The second worker starts (and warms up) while the first is busy, then the first
        # dies without a word.
        second = second_worker(ctx, tmp_path, "worker-2.log")
        first.kill()
        finished_elsewhere(ctx, request_id, victim,
                           "the request to finish on the second worker")
        assert second.terminate() == 0  # graceful stop on SIGTERM
    finally:
        first.close()
        if second is not None:
            second.close()

    assert_retried_once(ctx, request_id, victim)
    ctx.close()


@pytest.mark.slow
def test_stalled_worker_request_is_retried_and_the_resumed_one_publishes_nothing(
        tmp_path, postgres_url, feature_cache_dir, small_data, trained_state):
    ctx, request_id, stalled, victim = first_worker_mid_request(
        tmp_path, postgres_url, feature_cache_dir, small_data, trained_state,
        log_name="worker-stalled.log", delay_s=10)
    other = None
    try:
        stalled.stop()  # SIGSTOP: no heartbeat, no progress, no exit
        other = second_worker(ctx, tmp_path, "worker-other.log")
        done = finished_elsewhere(ctx, request_id, victim,
                                  "the request to finish on the other worker")

        stalled.resume()  # it carries on from where it froze ...
        wait_for(lambda: "publishes nothing" in stalled.log(), 60,
                 "the resumed worker to give up its attempt")
        assert other.terminate() == 0
    finally:
        stalled.close()
        if other is not None:
            other.close()

    assert f"request {request_id} is no longer held by {victim.worker_id}" in stalled.log()
    assert_retried_once(ctx, request_id, victim)  # ... and the resumed one published nothing
    final = load(ctx, request_id)
    assert (final.worker_id, final.result_version) == (done.worker_id, 2)
    ctx.close()


@pytest.mark.slow
def test_killed_api_with_embedded_worker_completes_after_restart(
        tmp_path, sqlite_url, feature_cache_dir, small_data, trained_state):
    ctx = prepared(tmp_path, sqlite_url, feature_cache_dir, small_data, trained_state)
    auth = {"Authorization": f"Bearer {api_key(ctx)}"}  # issue 5: calls carry a key
    api = ApiProcess(ctx.settings, tmp_path / "api-1.log", test_execution_delay_s=60)
    restarted = None
    try:
        api.wait_ready()
        response = httpx.post(f"{api.url}/forget-requests", json=forget_body(), timeout=10,
                              headers=auth)
        assert response.status_code == 202, response.text
        request_id = response.json()["id"]
        wait_for(lambda: running_with_progress(ctx, request_id), 60, "the embedded worker")
        api.kill()

        # No lease to wait out: the only process that runs requests on SQLite requeues, on
        # start, what it finds running.
        restarted = ApiProcess(ctx.settings, tmp_path / "api-2.log", port=api.port,
                               test_execution_delay_s=0.5)
        restarted.wait_ready()

        def finished():
            body = httpx.get(f"{restarted.url}/forget-requests/{request_id}", timeout=5,
                             headers=auth).json()
            return body if body["status"] in FINISHED else None

        body = wait_for(finished, 60, "the request to complete after the restart", 0.2)
        assert body["status"] == "completed", body["error"]
        assert body["attempts"] == 2 and body["result_version"] == 2
        # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal.
        assert restarted.terminate() in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in restarted.log()
    finally:
        api.close()
        if restarted is not None:
            restarted.close()

    assert [action for action, _ in audit_actions(ctx, request_id)] == [
        "forget_request.received", "forget_request.started", "forget_request.requeued",
        "forget_request.started", "forget_request.completed",
    ]
    versions = assert_no_orphans_or_partial_files(ctx)
    assert [v.forget_request_id for v in versions] == [None, request_id]
    ctx.close()


@pytest.mark.slow
def test_three_workers_two_apis_thirty_requests_on_postgresql(
        tmp_path, postgres_url, feature_cache_dir, small_data, trained_state):
    ctx = prepared(tmp_path, postgres_url, feature_cache_dir, small_data, trained_state)
    auth = {"Authorization": f"Bearer {api_key(ctx)}"}  # issue 5: calls carry a key
    apis = [ApiProcess(ctx.settings, tmp_path / f"api-{n}.log", embedded_worker="false")
            for n in range(2)]
    workers = [start_worker(ctx.settings, tmp_path / f"worker-{n}.log") for n in range(3)]
    try:
        for api in apis:
            api.wait_ready()
        for worker in workers:  # warmed up (data, model, features) and polling the queue
            wait_for(lambda: " ready" in worker.log(), 120, "the workers to be ready", 0.2)

        def post(n: int) -> httpx.Response:
            # alpha 0.5 keeps much of each class: the criterion is relaxed, this test is
            # about thirty requests across processes, not about how well they forget.
            body = forget_body(classes=[n % 10], params={"alpha": 0.5},
                               subject_reference=f"GDPR-{n:04d}",
                               acceptance={"forget_accuracy_max": 1.0})
            return httpx.post(f"{apis[n % 2].url}/forget-requests", json=body, timeout=30,
                              headers=auth)

        with ThreadPoolExecutor(30) as pool:
            responses = list(pool.map(post, range(30)))
        assert [r.status_code for r in responses] == [202] * 30, [r.text for r in responses]
        ids = [r.json()["id"] for r in responses]
        assert len(set(ids)) == 30

        def all_finished():
            with ctx.db.session() as session:
                rows = list(session.scalars(select(ForgetRequest)))
            return rows if all(r.status in FINISHED for r in rows) else None

        rows = wait_for(all_finished, 180, "thirty requests to finish", 0.3)
        for worker in workers:
            assert worker.terminate() == 0
    finally:
        for process in (*apis, *workers):
            process.close()

    assert Counter(r.status for r in rows) == {"completed": 30}, [r.error for r in rows]
    versions = assert_no_orphans_or_partial_files(ctx)
    produced = [v for v in versions if v.forget_request_id is not None]
    assert sorted(v.version for v in produced) == list(range(2, 32))  # distinct, no gaps here
    assert sorted(v.forget_request_id for v in produced) == sorted(ids)
    assert {r.result_version for r in rows} == set(range(2, 32))
    assert len({r.worker_id for r in rows}) >= 2  # the work was actually shared
    for request_id in ids:
        assert [a for a, _ in audit_actions(ctx, request_id)] == [
            "forget_request.received", "forget_request.started", "forget_request.completed",
        ]
    # Issue 5: five processes appended concurrently, and the audit log is one intact chain.
    from app.audit.service import verify_chain

    with ctx.db.session() as session:
        chain = verify_chain(session)
    assert chain.intact and chain.entries_checked >= 1 + 30 * 3, chain.describe()
    ctx.close()
