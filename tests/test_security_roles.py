"""Access control: every route x every role, key lifecycle, and the audit actor."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from app.auth.deps import role_matrix
from app.auth.models import ApiKey
from app.main import create_app
from tests.conftest import api_key, forget_body

ROLES = ("admin", "privacy_officer", "auditor", "client")
PUBLIC = None
ALL = set(ROLES)

# The specification (README "Security"): which roles may call each route. admin may call
# everything. A route missing here fails the test, so no new route goes unclassified.
EXPECTED: dict[tuple[str, str], set[str] | None] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
    ("GET", "/certificates/public-key"): PUBLIC,
    ("GET", "/registered-models"): ALL,
    ("GET", "/registered-models/{name}"): ALL,
    ("GET", "/metrics"): PUBLIC,  # unless UNLEARN_METRICS_REQUIRE_KEY (docs/operations.md)
    ("GET", "/methods"): ALL,
    ("GET", "/models"): ALL,
    ("GET", "/models/{version}"): ALL,
    ("GET", "/models/{version}/metrics"): {"admin", "privacy_officer", "auditor"},
    ("POST", "/models/{version}/promote"): {"admin"},
    ("POST", "/predict"): {"admin", "client", "auditor"},
    ("POST", "/forget-requests"): {"admin", "privacy_officer"},
    ("POST", "/forget-requests/{request_id}/cancel"): {"admin", "privacy_officer"},
    ("GET", "/forget-requests"): {"admin", "privacy_officer", "auditor"},
    ("GET", "/forget-requests/{request_id}"): {"admin", "privacy_officer", "auditor"},
    ("GET", "/forget-requests/{request_id}/certificate"): {"admin", "privacy_officer",
                                                          "auditor"},
    ("GET", "/audit-log"): {"admin", "auditor"},
    ("GET", "/audit-log/verify"): {"admin", "auditor"},
    ("GET", "/audit-log/export"): {"admin", "auditor"},
    ("GET", "/keys"): {"admin"},
    ("POST", "/keys"): {"admin"},
    ("POST", "/keys/{key_id}/revoke"): {"admin"},
    ("POST", "/datasets"): {"admin"},
    ("GET", "/datasets"): ALL,
    ("GET", "/datasets/{name}"): ALL,
    # The Open Inference Protocol (docs/serving.md): probes public, models as /predict.
    ("GET", "/v2/health/live"): PUBLIC,
    ("GET", "/v2/health/ready"): PUBLIC,
    ("GET", "/v2/models/{name}"): {"admin", "client"},
    ("GET", "/v2/models/{name}/ready"): {"admin", "client"},
    ("GET", "/v2/models/{name}/versions/{version}"): {"admin", "client"},
    ("GET", "/v2/models/{name}/versions/{version}/ready"): {"admin", "client"},
    ("POST", "/v2/models/{name}/infer"): {"admin", "client"},
    ("POST", "/v2/models/{name}/versions/{version}/infer"): {"admin", "client"},
    ("GET", "/subjects/{subject_id}/footprint"): {"admin", "privacy_officer", "auditor"},
}

# Path parameters name resources that do not exist: an allowed caller gets 404 (or 422
# for an empty body), a denied one 403 -- and nothing changes in the service.
PATH_VALUES = {"version": "99", "request_id": "00000000-0000-0000-0000-000000000000",
               "key_id": "no-such-key", "name": "mnist-cnn",
               "subject_id": "no-such-subject"}


def _url(path: str) -> str:
    url = path
    for name, value in PATH_VALUES.items():
        url = url.replace("{" + name + "}", value)
    assert "{" not in url, f"add a value for the path parameter in {path} to PATH_VALUES"
    return url


def _call(client: TestClient, method: str, path: str, headers: dict):
    if method == "GET":
        return client.get(_url(path), headers=headers)
    return client.request(method, _url(path), json={}, headers=headers)


@pytest.fixture
def keys(ctx):
    return {role: api_key(ctx, role, name=f"matrix-{role}") for role in ROLES}


def test_every_route_for_every_role_matches_the_matrix(ctx, keys):
    app = create_app(ctx)
    routes = {(method, path): roles for method, path, roles in role_matrix(app)}
    # The route list comes from the app itself; make sure it is complete.
    schema_routes = {(method.upper(), path) for path, operations in app.openapi()["paths"].items()
                     for method in operations}
    assert schema_routes <= set(routes), "role_matrix missed routes the schema has"
    assert set(routes) == set(EXPECTED), (
        f"unclassified routes {sorted(set(routes) - set(EXPECTED))}; "
        f"gone {sorted(set(EXPECTED) - set(routes))}: update EXPECTED and the README matrix")

    with TestClient(app) as client:
        for (method, path), allowed in EXPECTED.items():
            declared = routes[(method, path)]
            assert (declared is None) == (allowed is None), (method, path)
            if allowed is not None:
                assert set(declared) == allowed, (method, path, declared)
            for label, headers in (("no key", {}),
                                   ("unknown key", {"Authorization": "Bearer ulk_" + "x" * 43}),
                                   ("not bearer", {"Authorization": f"Basic {keys['admin']}"})):
                response = _call(client, method, path, headers)
                if allowed is None:
                    assert response.status_code not in (401, 403), (method, path, label)
                else:
                    assert response.status_code == 401, (method, path, label, response.text)
                    assert response.json()["error"]["code"] == "unauthenticated"
                    assert response.headers["www-authenticate"] == "Bearer"
            for role in ROLES:
                response = _call(client, method, path,
                                 {"Authorization": f"Bearer {keys[role]}"})
                if allowed is None or role in allowed:
                    assert response.status_code not in (401, 403), (method, path, role,
                                                                     response.text)
                else:
                    assert response.status_code == 403, (method, path, role, response.text)
                    assert response.json()["error"]["code"] == "forbidden"


def test_denials_do_not_reveal_whether_a_resource_exists(client, ctx, keys):
    real = client.post("/forget-requests?wait=true", json=forget_body()).json()["id"]
    missing = PATH_VALUES["request_id"]
    for headers, status in (({"Authorization": f"Bearer {keys['client']}"}, 403),
                            ({"Authorization": "Bearer wrong-key-wrong-key-wrong"}, 401)):
        answers = [client.get(f"/forget-requests/{request_id}{suffix}", headers=headers)
                   for request_id in (real, missing) for suffix in ("", "/certificate")]
        assert {a.status_code for a in answers} == {status}
        assert len({a.text for a in answers}) == 1  # same body for existing and missing


def test_audit_actor_is_the_key_name_and_requested_by_is_kept(ctx, keys):
    with TestClient(create_app(ctx)) as client:
        headers = {"Authorization": f"Bearer {keys['privacy_officer']}"}
        filed = client.post("/forget-requests", headers=headers,
                            json=forget_body(requested_by="someone.else@example.com"))
        assert filed.status_code == 202
        entries = client.get("/audit-log", params={"action": "forget_request.received"},
                             headers={"Authorization": f"Bearer {keys['auditor']}"}).json()
    entry = entries["items"][0]
    assert entry["actor"] == "matrix-privacy_officer"
    assert entry["details"]["requested_by"] == "someone.else@example.com"


def test_keys_are_stored_hashed_and_can_be_revoked_or_expire(client, ctx):
    created = client.post("/keys", json={"name": "ci-bot", "roles": ["client"]})
    assert created.status_code == 201
    token, key_id = created.json()["key"], created.json()["id"]
    with ctx.db.session() as session:
        row = session.get(ApiKey, key_id)
        stored = " ".join(str(getattr(row, c.name)) for c in ApiKey.__table__.columns)
    assert token not in stored and token[4:] not in stored
    use = {"Authorization": f"Bearer {token}"}
    assert client.get("/models", headers=use).status_code == 200
    listed = client.get("/keys").json()["items"]
    assert "key" not in listed[0] and {k["name"] for k in listed} >= {"ci-bot", "test-admin"}
    assert client.post("/keys", json={"name": "ci-bot", "roles": ["client"]}).status_code == 409
    # A key differing in one character is refused.
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert client.get("/models",
                      headers={"Authorization": f"Bearer {tampered}"}).status_code == 401

    assert client.post(f"/keys/{key_id}/revoke").json()["revoked_at"] is not None
    assert client.get("/models", headers=use).status_code == 401

    expiring = api_key(ctx, "client", name="short-lived")
    use = {"Authorization": f"Bearer {expiring}"}
    assert client.get("/models", headers=use).status_code == 200
    with ctx.db.session() as session:
        session.execute(update(ApiKey).where(ApiKey.name == "short-lived").values(
            expires_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)))
    assert client.get("/models", headers=use).status_code == 401

    actions = [e["action"] for e in client.get("/audit-log").json()["items"]]
    assert "api_key.created" in actions and "api_key.revoked" in actions


@pytest.mark.parametrize("body, field", [
    ({"name": "worker:x", "roles": ["admin"]}, "name"),
    ({"name": "ok", "roles": []}, "roles"),
    ({"name": "ok", "roles": ["root"]}, "roles[0]"),
    ({"name": "ok", "roles": ["client"], "expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),
    ({"name": "ok", "roles": ["client"], "expires_at": "2999-01-01T00:00:00"}, "expires_at"),
])
def test_bad_key_requests_are_422(client, body, field):
    response = client.post("/keys", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field


def test_bootstrap_creates_one_admin_key_once(ctx, capsys):
    from app.auth.service import announce_bootstrap_key, authenticate, ensure_security

    with ctx.db.session() as session:
        assert session.scalar(select(ApiKey.id)) is None
    token = ensure_security(ctx)
    announce_bootstrap_key(token)
    assert token in capsys.readouterr().err
    with ctx.db.session() as session:
        principal = authenticate(session, token)
    assert principal.name == "bootstrap-admin" and principal.roles == {"admin"}
    assert ensure_security(ctx) is None  # keys exist: nothing new, nothing printed
    assert ctx.settings.signing_key_path.exists()
    assert oct(ctx.settings.signing_key_path.stat().st_mode & 0o777) == "0o600"


def test_bootstrap_takes_the_key_from_the_environment(tmp_path, feature_cache_dir,
                                                      small_data, trained_state):
    from app.auth.service import BOOTSTRAP_FROM_ENV, authenticate, ensure_security
    from tests.conftest import make_ctx, make_settings

    chosen = "my-own-bootstrap-key-Zq3v9XkP2mW7tR4yB8nL"
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'b.db'}", feature_cache_dir,
                             bootstrap_admin_key=chosen)
    context = make_ctx(settings, small_data, trained_state)
    try:
        assert ensure_security(context) == BOOTSTRAP_FROM_ENV  # the key itself is not echoed
        with context.db.session() as session:
            assert authenticate(session, chosen).roles == {"admin"}
    finally:
        context.close()


def test_bootstrap_banner_names_the_port_served(ctx, capsys, monkeypatch):
    """`unlearn serve --port 8123` tells its app processes where they listen; the first
    admin key's banner shows that address, not a hard-coded :8000."""
    import uvicorn

    from app.auth.service import SERVED_URL_VARIABLE, announce_bootstrap_key
    from app.cli import serve

    # serve() sets the variable in os.environ itself: recording it with setenv first makes
    # monkeypatch remove it again afterwards.
    monkeypatch.setenv(SERVED_URL_VARIABLE, "unset")
    monkeypatch.delenv(SERVED_URL_VARIABLE)
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)
    monkeypatch.setenv("UNLEARN_DATABASE_URL", ctx.settings.database_url)
    serve(host="0.0.0.0", port=8123, workers=1)
    with TestClient(create_app(ctx)):
        pass
    banner = capsys.readouterr().err
    assert "http://0.0.0.0:8123/models" in banner and ":8000" not in banner
    monkeypatch.delenv(SERVED_URL_VARIABLE)
    announce_bootstrap_key("ulk_x", "http://127.0.0.1:9000")  # `unlearn bootstrap --url`
    assert "http://127.0.0.1:9000/models" in capsys.readouterr().err


def test_keys_cli_create_prints_only_the_key_on_stdout(ctx, monkeypatch):
    """KEY=$(unlearn keys create ...) captures the key alone; --quiet silences the rest."""
    from typer.testing import CliRunner

    from app.cli import cli
    from app.core.config import get_settings

    monkeypatch.setenv("UNLEARN_DATABASE_URL", ctx.settings.database_url)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        created = runner.invoke(cli, ["keys", "create", "--name", "ci", "--role", "client"])
        assert created.exit_code == 0, created.output
        assert created.stdout.count("\n") == 1 and created.stdout.startswith("ulk_")
        assert "created key ci" in created.stderr
        quiet = runner.invoke(cli, ["keys", "create", "--name", "ci2", "--role", "client",
                                    "--quiet"])
        assert quiet.exit_code == 0, quiet.output
        assert quiet.stdout.count("\n") == 1 and quiet.stderr == ""
    finally:
        get_settings.cache_clear()


def test_keys_cli_create_list_revoke(ctx, monkeypatch):
    from typer.testing import CliRunner

    from app.cli import cli
    from app.core.config import get_settings

    monkeypatch.setenv("UNLEARN_DATABASE_URL", ctx.settings.database_url)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        created = runner.invoke(cli, ["keys", "create", "--name", "ops", "--role", "auditor",
                                      "--role", "client", "--expires-in-days", "30"])
        assert created.exit_code == 0, created.output
        token = created.stdout.strip().splitlines()[-1]
        with TestClient(create_app(ctx)) as client:
            headers = {"Authorization": f"Bearer {token}"}
            assert client.get("/audit-log", headers=headers).status_code == 200
            assert client.post("/models/1/promote", headers=headers).status_code == 403
            listed = runner.invoke(cli, ["keys", "list"])
            assert "ops" in listed.output and "auditor,client" in listed.output
            assert token not in listed.output
            assert runner.invoke(cli, ["keys", "revoke", "ops"]).exit_code == 0
            assert client.get("/audit-log", headers=headers).status_code == 401
            assert "revoked" in runner.invoke(cli, ["keys", "list"]).output
    finally:
        get_settings.cache_clear()


def test_readme_shows_the_matrix_the_routes_enforce(ctx):
    from pathlib import Path

    from app.auth.deps import role_matrix_markdown

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    assert role_matrix_markdown(create_app(ctx)) in readme, (
        "the README's role matrix is stale: paste the output of `unlearn keys matrix`")

