"""GET /metrics: HTTP traffic by route template and status, predictions by model and
version, forget requests by method and final status, queue depth by queue, request
durations, model cache hits and misses, audit chain length; off with the setting."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.forgetting.worker import InProcessExecutor, Notifier
from app.main import create_app
from app.operations import queue_for_method
from tests.conftest import api_key, authorized, forget_body, make_ctx, make_settings


def scrape(client: TestClient) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def images(count: int) -> list:
    return np.random.default_rng(0).random((count, 28, 28)).round(3).tolist()


def test_queue_names_by_method():
    assert queue_for_method("output_dampening") == "light"
    for method in ("ssd", "fisher", "finetune", "retrain", "sisa"):
        assert queue_for_method(method) == "heavy"


def test_metrics_report_http_predictions_queue_cache_requests_and_audit(ctx):
    # No embedded worker: filed requests stay queued until this test runs them.
    with authorized(TestClient(create_app(ctx, start_worker=False)), ctx) as client:
        before = scrape(client)
        assert value(before, "unlearn_queue_depth", queue="light") == 0
        assert value(before, "unlearn_metrics_database_up") == 1

        for _ in range(2):
            assert client.post("/predict", json={"model_version": 1,
                                                 "instances": images(3)}).status_code == 200
        assert client.get("/models/99").status_code == 404
        for body in (forget_body(), forget_body(classes=[3]),
                     forget_body(method="ssd", params={})):
            assert client.post("/forget-requests", json=body).status_code == 202

        samples = scrape(client)
        assert value(samples, "unlearn_prediction_requests_total",
                     model="mnist-cnn", version="1") == 2
        assert value(samples, "unlearn_predicted_images_total",
                     model="mnist-cnn", version="1") == 6
        # Route templates, not raw paths; exact status codes.
        assert value(samples, "http_requests_total",
                     handler="/predict", method="POST", status="200") == 2
        assert value(samples, "http_requests_total",
                     handler="/models/{version}", method="GET", status="404") == 1
        assert value(samples, "http_request_duration_seconds_count",
                     handler="/predict", method="POST", status="200") == 2
        assert value(samples, "unlearn_queue_depth", queue="light") == 2
        assert value(samples, "unlearn_queue_depth", queue="heavy") == 1
        # The first prediction loaded the model (or the warm cache had it); the second hit.
        assert value(samples, "unlearn_model_cache_hits_total") >= 1
        assert (value(samples, "unlearn_model_cache_hits_total")
                + value(samples, "unlearn_model_cache_misses_total")) >= 2
        head = client.get("/audit-log/verify").json()["head_seq"]
        assert value(samples, "unlearn_audit_chain_length") == head

        worker = InProcessExecutor(ctx, Notifier(), poll_interval=0.05)
        assert worker.run_once() and worker.run_once()  # the two light requests
        samples = scrape(client)
        assert value(samples, "unlearn_forget_requests_total",
                     method="output_dampening", status="completed") == 2
        assert value(samples, "unlearn_queue_depth", queue="light") == 0
        assert value(samples, "unlearn_queue_depth", queue="heavy") == 1
        assert value(samples, "unlearn_forget_request_duration_seconds_count",
                     method="output_dampening", phase="total") == 2
        assert value(samples, "unlearn_audit_chain_length") == \
            client.get("/audit-log/verify").json()["head_seq"] > head
        # /metrics itself is not counted.
        assert not any(name == "http_requests_total" and ("handler", "/metrics") in labels
                       for name, labels in samples)


def test_metrics_can_require_a_key(tmp_path, feature_cache_dir, small_data, trained_state):
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'm.db'}", feature_cache_dir,
                             metrics_require_key=True)
    ctx = make_ctx(settings, small_data, trained_state)
    try:
        with TestClient(create_app(ctx, start_worker=False)) as client:
            assert client.get("/metrics").status_code == 401
            client_key = api_key(ctx, "client", name="metrics-client")
            assert client.get("/metrics", headers={
                "Authorization": f"Bearer {client_key}"}).status_code == 403
            auditor = api_key(ctx, "auditor", name="metrics-auditor")
            response = client.get("/metrics", headers={"Authorization": f"Bearer {auditor}"})
            assert response.status_code == 200
            assert "unlearn_audit_chain_length" in response.text
    finally:
        ctx.close()


def test_metrics_switched_off(tmp_path, feature_cache_dir, small_data, trained_state):
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'off.db'}", feature_cache_dir,
                             metrics_enabled=False)
    ctx = make_ctx(settings, small_data, trained_state)
    try:
        with authorized(TestClient(create_app(ctx, start_worker=False)), ctx) as client:
            assert client.get("/metrics").status_code == 404
            response = client.post("/predict", json={"instances": images(2)})
            assert response.status_code == 200
            assert "x-request-id" in response.headers  # request IDs stay on
        assert "metrics" not in ctx.extras
    finally:
        ctx.close()


def test_two_apps_over_one_context_share_its_metrics(ctx):
    headers = {"Authorization": f"Bearer {api_key(ctx, name='two-apps')}"}
    for _ in range(2):
        with TestClient(create_app(ctx, start_worker=False), headers=headers) as client:
            assert client.get("/models").status_code == 200
            samples = scrape(client)
    assert value(samples, "http_requests_total", handler="/models", method="GET",
                 status="200") == 2


def test_job_engine_jobs_by_queue_and_status(ctx):
    """On PostgreSQL the job engine's own table is reported by queue and status, the
    maintenance queue (its hourly clean-up) included, with zeros for the empty series;
    on SQLite there is no job engine and no such family."""
    from sqlalchemy import text

    from app.forgetting.jobs import CLEANUP_TASK, MAINTENANCE_QUEUE

    with authorized(TestClient(create_app(ctx, start_worker=False)), ctx) as client:
        before = scrape(client)
        if ctx.settings.database_url.startswith("sqlite"):
            assert not any(name == "unlearn_jobs" for name, _ in before)
            return
        assert ("unlearn_jobs", (("queue", "maintenance"), ("status", "todo"))) in before
        assert value(before, "unlearn_jobs", queue="light", status="todo") == 0
        for body in (forget_body(), forget_body(classes=[3]),
                     forget_body(method="ssd", params={})):
            assert client.post("/forget-requests", json=body).status_code == 202
        with ctx.db.session() as session:  # the clean-up, as the periodic scheduler defers it
            session.execute(text(
                "SELECT procrastinate_defer_jobs_v1(ARRAY[ROW(:queue, :task, 0, NULL, NULL, "
                "'{\"timestamp\": 0}'::jsonb, NULL)::procrastinate_job_to_defer_v1])"),
                {"queue": MAINTENANCE_QUEUE, "task": CLEANUP_TASK})
        samples = scrape(client)
        assert value(samples, "unlearn_jobs", queue="light", status="todo") == 2
        assert value(samples, "unlearn_jobs", queue="heavy", status="todo") == 1
        assert value(samples, "unlearn_jobs", queue="maintenance", status="todo") == 1
        assert value(samples, "unlearn_jobs", queue="light", status="failed") == 0
