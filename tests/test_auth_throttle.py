"""Failed authentication is throttled (per client address, per key prefix: 429 with
Retry-After), audited in aggregate, and never locks a valid key out; a weak bootstrap
admin key is a configuration error."""

from __future__ import annotations

import dataclasses
import secrets

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.audit.models import AuditEntry
from app.auth.throttle import Throttle
from app.core.config import ConfigError, load_settings
from app.main import create_app
from tests.conftest import api_key
from tests.test_console import CONSOLE_URL, hidden


def _client(ctx, **limits) -> TestClient:
    settings = ctx.settings.model_copy(update=limits)
    return TestClient(create_app(dataclasses.replace(ctx, settings=settings)),
                      base_url=CONSOLE_URL, follow_redirects=False)


def _wrong(prefix: str = "ulk_") -> str:
    return prefix + secrets.token_urlsafe(32)


def test_an_address_over_its_failure_limit_gets_429_with_retry_after(ctx):
    valid = api_key(ctx, "client", name="app")
    with _client(ctx, auth_failures_per_address="5/minute",
                 auth_failures_per_key_prefix="1000/minute") as client:
        answers = [client.get("/models", headers={"Authorization": f"Bearer {_wrong()}"})
                   for _ in range(8)]
        assert [a.status_code for a in answers] == [401] * 5 + [429] * 3
        refused = answers[-1]
        assert refused.json()["error"]["code"] == "too_many_failed_authentications"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        # Over the limit the key is not even looked at: this address learns nothing more
        # until the window moves on (a guesser's rate is the limit, not 30 a second).
        again = client.get("/models", headers={"Authorization": f"Bearer {valid}"})
        assert again.status_code == 429
        # No key at all is not a guess: still the plain 401.
        assert client.get("/models").status_code == 401


def test_throttling_is_per_address():
    throttle = Throttle("3/minute", "1000/minute")
    for _ in range(3):
        throttle.check_address("10.0.0.1")
        throttle.record_failure("10.0.0.1", _wrong())
    with pytest.raises(Exception) as refused:
        throttle.check_address("10.0.0.1")
    assert refused.value.status_code == 429
    throttle.check_address("10.0.0.2")  # another address is not affected


def test_hammering_a_key_prefix_never_locks_out_the_valid_key(ctx):
    valid = api_key(ctx, "client", name="app")
    with _client(ctx, auth_failures_per_address="1000/minute",
                 auth_failures_per_key_prefix="3/minute") as client:
        same_prefix = [valid[:12] + secrets.token_urlsafe(32) for _ in range(5)]
        codes = [client.get("/models", headers={"Authorization": f"Bearer {k}"}).status_code
                 for k in same_prefix]
        assert codes == [401, 401, 401, 429, 429]
        assert client.get("/models",
                          headers={"Authorization": f"Bearer {valid}"}).status_code == 200
        # Another prefix is unaffected.
        assert client.get("/models", headers={
            "Authorization": f"Bearer {_wrong('ulk_other')}"}).status_code == 401


def test_failures_are_audited_once_per_address_per_window(ctx):
    with _client(ctx, auth_failures_per_address="1000/minute",
                 auth_failures_per_key_prefix="1000/minute") as client:
        for _ in range(12):
            assert client.get("/models", headers={
                "Authorization": f"Bearer {_wrong()}"}).status_code == 401
    with ctx.db.session() as session:
        entries = list(session.scalars(select(AuditEntry).where(
            AuditEntry.action == "auth.failures")))
    assert len(entries) == 1
    assert entries[0].details["address"] == "testclient"
    assert entries[0].details["interface"] == "api"
    assert entries[0].actor == "system:auth"


def test_console_login_is_throttled_too(ctx):
    with _client(ctx, auth_failures_per_address="3/minute") as console:
        codes = []
        for _ in range(5):
            form = console.get("/console/login")
            codes.append(console.post("/console/login", data={
                "api_key": _wrong(), "login_token": hidden(form.text, "login_token"),
                "next": "/console/models"}))
        assert [r.status_code for r in codes] == [401, 401, 401, 429, 429]
        assert int(codes[-1].headers["Retry-After"]) >= 1
        assert "Too many failed logins" in codes[-1].text


@pytest.mark.parametrize("weak", ["short-key", "a" * 40, "abcd" * 10,
                                  "0123456789012345678901234567890"])
def test_a_weak_bootstrap_admin_key_is_a_configuration_error(weak):
    with pytest.raises(ConfigError) as refused:
        load_settings(bootstrap_admin_key=weak)
    message = str(refused.value)
    assert "UNLEARN_BOOTSTRAP_ADMIN_KEY" in message and weak not in message


def test_a_random_bootstrap_admin_key_is_accepted():
    for key in (secrets.token_urlsafe(32), secrets.token_hex(16)):
        assert load_settings(bootstrap_admin_key=key).bootstrap_admin_key is not None
