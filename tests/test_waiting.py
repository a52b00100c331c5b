"""``?wait=true`` holds no thread, is bounded per key, and the probes never queue behind
the request thread pool (over real HTTP, on a uvicorn server)."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.conftest import api_key, forget_body, make_ctx, make_settings
from tests.live_server import live_server

WAITERS = 50  # more than the thread pool's 40 workers


@pytest.fixture
def waiting_ctx(tmp_path, feature_cache_dir, small_data, trained_state):
    # SQLite is enough here: what is tested is where a waiting call waits, not the database.
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'unlearn.db'}",
                             feature_cache_dir, wait_timeout_s=30, max_waits_per_key=100)
    context = make_ctx(settings, small_data, trained_state)
    yield context
    context.close()


def _hold_waits(url: str, keys: list[str], count: int) -> tuple[list[threading.Thread], list]:
    answers: list = []

    def one(key: str) -> None:
        try:
            answers.append(httpx.post(f"{url}/forget-requests?wait=true", json=forget_body(),
                                      headers={"Authorization": f"Bearer {key}"},
                                      timeout=120).status_code)
        except httpx.HTTPError as error:
            answers.append(repr(error))

    threads = [threading.Thread(target=one, args=(keys[i % len(keys)],), daemon=True)
               for i in range(count)]
    for thread in threads:
        thread.start()
    return threads, answers


def _finish_all(ctx) -> None:
    """Fail the queued requests behind the service's back: waiters see it at their next read."""
    from sqlalchemy import update

    from app.forget_requests.models import ForgetRequest

    with ctx.db.session() as session:
        session.execute(update(ForgetRequest).values(status="failed", error="test"))


def test_probes_and_key_checks_answer_while_fifty_waits_are_held(waiting_ctx):
    officer = api_key(waiting_ctx, "privacy_officer", name="dpo")
    client = api_key(waiting_ctx, "client", name="app")
    # No worker: every filed request stays queued, so every waiting call keeps waiting.
    with live_server(waiting_ctx, start_worker=False) as url:
        threads, answers = _hold_waits(url, [officer], WAITERS)
        from app.forget_requests.models import ForgetRequest

        def filed() -> int:
            with waiting_ctx.db.session() as session:
                return session.query(ForgetRequest).count()

        # 40 filed: the thread pool's worth of waits is held (before the fix, the other
        # ten could not even be filed until the first ones timed out).
        deadline = time.monotonic() + 60
        while filed() < 40 and time.monotonic() < deadline:
            time.sleep(0.1)
        # Generous bounds for a loaded 2-core machine; before the fix each of these queued
        # behind the 40 waiting threads for the whole 30 s wait timeout.
        for path, headers in (("/healthz", {}), ("/readyz", {}), ("/v2/health/live", {}),
                              ("/v2/health/ready", {}),
                              ("/models", {"Authorization": f"Bearer {client}"})):
            started = time.monotonic()
            response = httpx.get(url + path, headers=headers, timeout=60)
            elapsed = time.monotonic() - started
            assert response.status_code == 200, (path, response.text)
            assert elapsed < 10, f"{path} took {elapsed:.1f}s while waits were held"
        deadline = time.monotonic() + 60
        while filed() < WAITERS and time.monotonic() < deadline:
            time.sleep(0.1)
        assert filed() == WAITERS
        time.sleep(0.5)
        assert answers == []  # all still waiting
        _finish_all(waiting_ctx)
        for thread in threads:
            thread.join(60)
        assert answers == [200] * WAITERS


def test_waits_over_the_per_key_bound_answer_202_at_once(tmp_path, feature_cache_dir,
                                                        small_data, trained_state):
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'unlearn.db'}",
                             feature_cache_dir, wait_timeout_s=30, max_waits_per_key=2)
    ctx = make_ctx(settings, small_data, trained_state)
    officer = api_key(ctx, "privacy_officer", name="dpo")
    other = api_key(ctx, "privacy_officer", name="dpo2")
    try:
        with live_server(ctx, start_worker=False) as url:
            threads, answers = _hold_waits(url, [officer], 2)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                time.sleep(0.1)
                from app.forget_requests.models import ForgetRequest

                with ctx.db.session() as session:
                    if session.query(ForgetRequest).count() == 2:
                        break
            time.sleep(0.3)  # both waits admitted
            third = httpx.post(f"{url}/forget-requests?wait=true", json=forget_body(),
                               headers={"Authorization": f"Bearer {officer}"}, timeout=10)
            assert third.status_code == 202
            assert third.json()["status"] == "queued"
            assert third.headers["Location"] == f"/forget-requests/{third.json()['id']}"
            # The bound is per key: another key still waits (and times out at 1 s here).
            ctx.settings.wait_timeout_s = 1.0
            started = time.monotonic()
            fourth = httpx.post(f"{url}/forget-requests?wait=true", json=forget_body(),
                                headers={"Authorization": f"Bearer {other}"}, timeout=30)
            assert fourth.status_code == 202 and time.monotonic() - started >= 0.9
            assert answers == []
            _finish_all(ctx)
            for thread in threads:
                thread.join(30)
            assert answers == [200, 200]
    finally:
        ctx.close()


def test_wait_returns_as_soon_as_the_embedded_worker_finishes(client):
    response = client.post("/forget-requests?wait=true", json=forget_body())
    assert response.status_code == 200
    assert response.json()["status"] == "completed"
