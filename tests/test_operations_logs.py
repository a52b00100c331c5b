"""Structured logs: one JSON object per line, carrying the HTTP request ID, the forget
request ID and the worker ID; never an API key, an Authorization header or a subject's
reference."""

from __future__ import annotations

import io
import json
import logging
import time

import pytest
import structlog
from fastapi.testclient import TestClient

from app.main import create_app
from app.observability.logs import configure_logging
from tests.conftest import api_key, forget_body


@pytest.fixture
def log_stream():
    """Route logging through the service's JSON handler into a buffer; restore after."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    yield stream
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    structlog.reset_defaults()


def lines(stream: io.StringIO) -> list[dict]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]  # every line is one JSON object


def test_json_lines_carry_request_forget_request_and_worker_ids_and_no_secrets(ctx, log_stream):
    token = api_key(ctx, "admin", name="log-admin")
    headers = {"Authorization": f"Bearer {token}", "X-Request-ID": "trace-abc.123"}
    body = forget_body(subject_reference="SUBJECT-REF-7731")
    with TestClient(create_app(ctx)) as client:
        filed = client.post("/forget-requests?wait=true", json=body, headers=headers)
        assert filed.status_code == 200, filed.text
        assert filed.headers["x-request-id"] == "trace-abc.123"
        issued = client.get("/healthz", headers={"X-Request-ID": "bad id\nforged"})
        issued_id = issued.headers["x-request-id"]
        assert len(issued_id) == 32 and "\n" not in issued_id  # replaced, not echoed
        # Things that must never come out of the logs, even when code logs them.
        logging.getLogger("unlearn.test").warning(
            "caller sent %s", f"Bearer {token}",
            extra={"authorization": f"Bearer {token}", "subject_reference": "SUBJECT-REF-7731",
                   "note": f"key={token}"})
        request_id = filed.json()["id"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and f'"forget_request_id":"{request_id}"' not in \
                log_stream.getvalue():
            time.sleep(0.05)

    output = log_stream.getvalue()
    records = lines(log_stream)
    assert token not in output and token[4:] not in output
    assert "SUBJECT-REF-7731" not in output

    access = [r for r in records if r.get("logger") == "unlearn.http"
              and r.get("route") == "/forget-requests"]
    assert access and access[0]["request_id"] == "trace-abc.123"
    assert access[0]["status"] == 200 and access[0]["http_method"] == "POST"
    assert {"timestamp", "level", "event"} <= set(access[0])
    assert any(r.get("request_id") == issued_id and r.get("route") == "/healthz"
               for r in records)

    final = [r for r in records if r.get("forget_request_id") == request_id]
    assert final, "no line about the forget request"
    assert all(r.get("worker_id") for r in final)  # logged by the worker thread
    assert any(r["event"].endswith("completed") for r in final)

    planted = [r for r in records if r.get("logger") == "unlearn.test"]
    assert planted[0]["authorization"] == "[REDACTED]"
    assert planted[0]["subject_reference"] == "[REDACTED]"
    assert "[REDACTED]" in planted[0]["event"] and "[REDACTED]" in planted[0]["note"]


def test_text_format_is_one_line_per_event():
    stream = io.StringIO()
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    try:
        configure_logging("info", "text", stream=stream)
        logging.getLogger("unlearn.test").info("hello %s", "there", extra={"worker_id": "w1"})
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        structlog.reset_defaults()
    text = stream.getvalue()
    assert text.count("\n") == 1 and "hello there" in text and "worker_id=w1" in text
    with pytest.raises(ValueError):
        json.loads(text)


def test_default_handler_follows_stderr_when_it_is_swapped_and_closed(monkeypatch):
    """A worker thread that logs after the stderr it started with was closed (pytest's
    capture, a daemonising wrapper) writes to the current stderr, not to a closed file."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    first, second = io.StringIO(), io.StringIO()
    try:
        monkeypatch.setattr("sys.stderr", first)
        handler = configure_logging("info", "text")
        monkeypatch.setattr("sys.stderr", second)
        first.close()
        errors: list[BaseException] = []
        monkeypatch.setattr(handler, "handleError", lambda record: errors.append(record))
        logging.getLogger("unlearn.worker").info("worker ready")
        assert not errors
        assert "worker ready" in second.getvalue()
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        structlog.reset_defaults()


def test_alembic_plugin_announcements_are_not_logged_at_start():
    """`unlearn serve` checks migrations at start; Alembic's per-plugin INFO lines are noise."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    try:
        configure_logging("info", "text", stream=io.StringIO())
        assert not logging.getLogger("alembic.runtime.plugins").isEnabledFor(logging.INFO)
        assert logging.getLogger("alembic.runtime.migration").isEnabledFor(logging.INFO)
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        structlog.reset_defaults()
