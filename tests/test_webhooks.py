"""Completion webhooks against a real HTTP receiver on 127.0.0.1: signed (HMAC-SHA256 over
timestamp and raw body), retried with backoff after a failure, every attempt audited,
durable across a dead deliverer; callback URLs outside the allow-list refused at filing."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from app.db.base import utcnow
from app.forget_requests.models import ForgetRequest
from app.main import create_app
from app.notifications import service as outbox
from app.notifications.deliverer import WebhookDeliverer
from app.notifications.models import WebhookDelivery
from app.notifications.signing import load_or_create_secret, sign, verify
from app.notifications.urls import CallbackRefused, check_callback_url, pinned_request_url
from tests.conftest import authorized, forget_body, make_ctx, make_settings

SECRET = "webhook-test-secret-0123456789abcdef"


class Receiver:
    """A real HTTP server that records every POST and answers with scripted statuses."""

    def __init__(self, statuses: list[int]):
        self.statuses = list(statuses)
        self.requests: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers),
                                          "body": body})
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/unlearn?token=abc"

    def wait_for(self, count: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.requests) >= count, f"got {len(self.requests)} of {count} requests"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def hook_ctx(tmp_path, database_url, feature_cache_dir, small_data, trained_state, **overrides):
    settings = make_settings(
        tmp_path, database_url, feature_cache_dir,
        webhook_allowed_hosts="127.0.0.1", webhook_allow_private_addresses=True,
        webhook_secret=SECRET, webhook_backoff_s=0.05, webhook_poll_s=0.05, **overrides)
    return make_ctx(settings, small_data, trained_state)


@pytest.fixture
def webhook_ctx(tmp_path, database_url, feature_cache_dir, small_data, trained_state):
    context = hook_ctx(tmp_path, database_url, feature_cache_dir, small_data, trained_state)
    yield context
    context.close()


def attempts_audited(client, request_id) -> list[dict]:
    items = client.get("/audit-log", params={"action": "webhook.delivery_attempt",
                                             "forget_request_id": request_id}).json()["items"]
    return sorted(items, key=lambda item: item["seq"])


def test_completion_is_posted_signed_and_retried_after_a_500(webhook_ctx):
    with Receiver([500, 200]) as receiver, \
            authorized(TestClient(create_app(webhook_ctx)), webhook_ctx) as client:
        filed = client.post("/forget-requests?wait=true",
                            json=forget_body(callback_url=receiver.url))
        assert filed.status_code == 200, filed.text
        request_id = filed.json()["id"]
        assert filed.json()["callback_url"] == receiver.url
        receiver.wait_for(2)
        deadline = time.monotonic() + 10
        while len(attempts_audited(client, request_id)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        audited = attempts_audited(client, request_id)
        assert client.get("/audit-log/verify").json()["intact"] is True

    first, second = receiver.requests
    assert first["path"] == second["path"] == "/hooks/unlearn?token=abc"
    assert first["body"] == second["body"]  # the same body on every attempt
    for attempt_number, received in enumerate((first, second), start=1):
        headers = received["headers"]
        assert headers["X-Unlearn-Attempt"] == str(attempt_number)
        assert headers["Content-Type"] == "application/json"
        assert verify(SECRET.encode(), headers["X-Unlearn-Timestamp"],
                      headers["X-Unlearn-Signature"], received["body"])
        # The signature covers the timestamp: another timestamp does not verify.
        assert not verify(SECRET.encode(), str(int(headers["X-Unlearn-Timestamp"]) + 1),
                          headers["X-Unlearn-Signature"], received["body"])
        assert not verify(b"another-secret-0123456789", headers["X-Unlearn-Timestamp"],
                          headers["X-Unlearn-Signature"], received["body"])
    payload = json.loads(first["body"])
    assert payload["event"] == "forget_request.completed"
    assert payload["forget_request"]["id"] == request_id
    assert payload["forget_request"]["status"] == "completed"
    assert payload["forget_request"]["result_version"] == 2
    assert "GDPR-2026-0042" not in first["body"].decode()  # no subject reference

    assert [entry["details"]["outcome"] for entry in audited] == ["retrying", "delivered"]
    assert [entry["details"]["status_code"] for entry in audited] == [500, 200]
    assert [entry["details"]["attempt"] for entry in audited] == [1, 2]
    assert all(entry["subject_reference"] == "GDPR-2026-0042" for entry in audited)
    assert all("token=abc" not in entry["details"]["url"] for entry in audited)
    with webhook_ctx.db.session() as session:
        delivery = session.scalar(select(WebhookDelivery))
        assert (delivery.status, delivery.attempts, delivery.last_status_code) == \
            ("delivered", 2, 200)


def test_by_default_every_callback_url_is_refused(client):
    refused = client.post("/forget-requests",
                          json=forget_body(callback_url="https://hooks.example.com/x"))
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert error["field"] == "callback_url"
    assert "UNLEARN_WEBHOOK_ALLOWED_HOSTS is empty" in error["message"]


def test_callback_urls_are_refused_at_filing_with_the_reason(webhook_ctx):
    with authorized(TestClient(create_app(webhook_ctx, start_worker=False)),
                    webhook_ctx) as allowed_client:
        for url, reason in (("http://evil.example.com/hook", "not on the allow-list"),
                            ("ftp://127.0.0.1/hook", "scheme 'ftp' is not allowed"),
                            ("file:///etc/passwd", "scheme 'file' is not allowed"),
                            ("http://user:pw@127.0.0.1/hook", "credentials")):
            response = allowed_client.post("/forget-requests",
                                           json=forget_body(callback_url=url))
            assert response.status_code == 422, (url, response.text)
            assert response.json()["error"]["field"] == "callback_url"
            assert reason in response.json()["error"]["message"], response.text
        with webhook_ctx.db.session() as session:
            assert session.scalar(select(ForgetRequest.id)) is None  # nothing was filed


def test_allowed_host_resolving_to_a_private_address_is_refused():
    def resolver(addresses):
        return lambda host, port: addresses

    allowed = ("hooks.example.com", "*.partner.example")
    for addresses, kind in ((["10.1.2.3"], "private"), (["127.0.0.1"], "loopback"),
                            (["169.254.169.254"], "link-local"),
                            (["::ffff:127.0.0.1"], "loopback"),
                            (["93.184.216.34", "192.168.0.7"], "private")):
        with pytest.raises(CallbackRefused, match=kind):
            check_callback_url("https://hooks.example.com/x", allowed, False, resolver(addresses))
    target = check_callback_url("https://api.partner.example:8443/cb?x=1", allowed, False,
                                resolver(["93.184.216.34"]))
    assert pinned_request_url(target) == "https://93.184.216.34:8443/cb?x=1"
    with pytest.raises(CallbackRefused, match="allow-list"):
        check_callback_url("https://partner.example/cb", allowed, False,
                           resolver(["93.184.216.34"]))
    # Explicitly allowed private addresses pass.
    check_callback_url("http://hooks.example.com/x", allowed, True, resolver(["10.1.2.3"]))


def test_a_delivery_pending_when_its_deliverer_died_is_delivered_later(
        tmp_path, database_url, feature_cache_dir, small_data, trained_state):
    # This service runs no deliverer: the delivery stays in the outbox, as when the
    # process that would have sent it dies.
    ctx = hook_ctx(tmp_path, database_url, feature_cache_dir, small_data, trained_state,
                   webhook_deliverer=False)
    try:
        with Receiver([200, 200]) as receiver:
            with authorized(TestClient(create_app(ctx)), ctx) as client:
                first = client.post("/forget-requests?wait=true",
                                    json=forget_body(callback_url=receiver.url)).json()
                second = client.post("/forget-requests?wait=true",
                                     json=forget_body(classes=[3])).json()
            time.sleep(0.2)
            assert receiver.requests == []
            with ctx.db.session() as session:
                # A dead deliverer's claim (expired), and a final request whose delivery
                # was never enqueued (its process died between the two transactions).
                session.execute(update(WebhookDelivery).values(
                    locked_by="deliverer:dead", locked_until=utcnow() - dt.timedelta(seconds=1),
                    attempts=1))
                session.execute(update(ForgetRequest)
                                .where(ForgetRequest.id == second["id"])
                                .values(callback_url=receiver.url))

            deliverer = WebhookDeliverer(ctx, "deliverer:next")
            try:
                assert deliverer.run_once() == 2  # swept, then both attempted
            finally:
                deliverer.stop()
            receiver.wait_for(2)
        delivered = {json.loads(r["body"])["forget_request"]["id"] for r in receiver.requests}
        assert delivered == {first["id"], second["id"]}
        with ctx.db.session() as session:
            rows = {row.forget_request_id: row for row in session.scalars(select(WebhookDelivery))}
        assert {row.status for row in rows.values()} == {"delivered"}
        assert rows[first["id"]].attempts == 2  # the dead deliverer's claim counted
        assert outbox.due_deliveries(ctx.db) == []
    finally:
        ctx.close()


def test_delivery_gives_up_after_the_last_attempt(
        tmp_path, database_url, feature_cache_dir, small_data, trained_state):
    ctx = hook_ctx(tmp_path, database_url, feature_cache_dir, small_data, trained_state,
                   webhook_max_attempts=3)
    try:
        with Receiver([503, 503, 503, 503]) as receiver, \
                authorized(TestClient(create_app(ctx)), ctx) as client:
            request_id = client.post("/forget-requests?wait=true",
                                     json=forget_body(callback_url=receiver.url)).json()["id"]
            receiver.wait_for(3)
            deadline = time.monotonic() + 10
            while len(attempts_audited(client, request_id)) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)  # a fourth attempt would have come by now
            outcomes = [e["details"]["outcome"] for e in attempts_audited(client, request_id)]
        assert len(receiver.requests) == 3
        assert outcomes == ["retrying", "retrying", "gave_up"]
        with ctx.db.session() as session:
            assert session.scalar(select(WebhookDelivery.status)) == "failed"
    finally:
        ctx.close()


def test_signature_scheme_and_secret_file(tmp_path):
    body = b'{"a":1}'
    assert sign(b"k" * 32, 1700000000, body) == sign(b"k" * 32, 1700000000, body)
    assert sign(b"k" * 32, 1700000000, body).startswith("sha256=")
    assert not verify(b"k" * 32, "1700000000", sign(b"k" * 32, 1700000000, body), body)  # old
    assert verify(b"k" * 32, "1700000000", sign(b"k" * 32, 1700000000, body), body,
                  now=1700000100)
    path = tmp_path / "secret"
    secret = load_or_create_secret(path)
    assert load_or_create_secret(path) == secret and len(secret) == 64
    assert path.stat().st_mode & 0o777 == 0o600
