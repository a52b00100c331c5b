"""PostgreSQL: the service runs under an app role that owns nothing. Migrations run as the
owner; the app role cannot UPDATE, DELETE, TRUNCATE or switch off the triggers of the
audit table, and the whole service (filing, executing, publishing, verifying) works."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

from app.db.migrations import upgrade
from app.db.roles import grant_app_role
from app.main import create_app
from tests.conftest import (
    api_key,
    forget_body,
    fresh_postgres_database,
    make_ctx,
    make_settings,
)


@pytest.fixture
def owner_and_app_urls():
    suffix = uuid.uuid4().hex[:8]
    owner, app = f"owner_{suffix}", f"app_{suffix}"
    with fresh_postgres_database(owner=owner, login_roles=(owner, app)) as url:
        as_admin = make_url(url)
        yield (as_admin.set(username=owner, password=None).render_as_string(hide_password=False),
               as_admin.set(username=app, password=None).render_as_string(hide_password=False),
               app)


def test_app_role_cannot_rewrite_the_audit_log_and_the_service_works(
        owner_and_app_urls, tmp_path, feature_cache_dir, small_data, trained_state):
    owner_url, app_url, app_role = owner_and_app_urls
    upgrade(owner_url)
    owner_engine = create_engine(owner_url)
    grant_app_role(owner_engine, app_role)

    ctx = make_ctx(make_settings(tmp_path, app_url, feature_cache_dir), small_data,
                   trained_state)
    try:
        with TestClient(create_app(ctx)) as client:
            client.headers["Authorization"] = f"Bearer {api_key(ctx, name='admin')}"
            done = client.post("/forget-requests?wait=true", json=forget_body())
            assert done.status_code == 200 and done.json()["status"] == "completed"
            certificate = client.get(f"/forget-requests/{done.json()['id']}/certificate")
            assert certificate.status_code == 200
            verified = client.get("/audit-log/verify").json()
            assert verified["intact"] is True and verified["entries_checked"] >= 5
            assert client.post("/models/2/promote").status_code == 200

        app_engine = create_engine(app_url)
        for statement in ("UPDATE audit_log SET actor = 'mallory'",
                          "DELETE FROM audit_log",
                          "TRUNCATE audit_log",
                          "ALTER TABLE audit_log DISABLE TRIGGER USER",
                          "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only",
                          "DROP TRIGGER audit_log_append_only ON audit_log",
                          "DROP TABLE audit_log",
                          "CREATE TABLE audit_log_copy (id int)",
                          "UPDATE alembic_version SET version_num = '0001'"):
            with pytest.raises(ProgrammingError) as refused:
                with app_engine.begin() as connection:
                    connection.execute(text(statement))
            message = str(refused.value.orig)
            assert "permission denied" in message or "must be owner" in message, message
        with app_engine.connect() as connection:
            owned = connection.scalar(text(
                "SELECT count(*) FROM pg_tables WHERE tableowner = current_user"))
        assert owned == 0
        app_engine.dispose()
    finally:
        ctx.close()
        owner_engine.dispose()
