"""The review console through httpx: login, cookie and CSRF, the pages, plots, the α sweep
and role hiding. The same flows in a real browser are in test_console_browser.py."""

from __future__ import annotations

import re
import time

import pytest
from fastapi.testclient import TestClient

from app.console import auth
from app.main import create_app
from tests.conftest import api_key, forget_body

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The console's cookies are Secure by default: a client keeps them over HTTPS only.
CONSOLE_URL = "https://testserver"


@pytest.fixture
def console(ctx):
    """A browser-like client of the console (cookies, no Authorization header), with an
    admin key to log in with."""
    with TestClient(create_app(ctx), base_url=CONSOLE_URL, follow_redirects=False) as client:
        client.admin_key = api_key(ctx, "admin", name="console-admin")
        yield client


def hidden(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, f"no hidden field {name}"
    return match.group(1)


def log_in(client: TestClient, key: str | None = None, next_path: str = "/console/models"):
    key = key or client.admin_key
    form = client.get("/console/login", params={"next": next_path})
    assert form.status_code == 200
    return client.post("/console/login", data={
        "api_key": key, "login_token": hidden(form.text, "login_token"), "next": next_path})


def csrf_of(client: TestClient, path: str = "/console/models") -> str:
    return hidden(client.get(path).text, "csrf_token")


def file_via_form(client: TestClient, **fields) -> object:
    data = {"csrf_token": csrf_of(client), "method": "output_dampening",
            "param.output_dampening.alpha": "0.01", "classes": ["2"],
            "requested_by": "officer@example.com", "subject_reference": "GDPR-CONSOLE-1",
            "reason": "test", "model_version": ""}
    data.update(fields)
    return client.post("/console/forget-requests", data=data)


def wait_completed(client: TestClient, request_id: str) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = client.get(f"/console/forget-requests/{request_id}/status").json()
        if state["finished"]:
            return state
        time.sleep(0.05)
    raise AssertionError("request did not finish")


def test_pages_need_a_login_and_the_right_key(console):
    response = console.get("/console/models")
    assert response.status_code == 303
    assert response.headers["location"] == "/console/login?next=%2Fconsole%2Fmodels"
    assert console.get("/console/plots/versions/1/confusion.png").status_code == 401

    refused = log_in(console, key="wrong-key-000000")
    assert refused.status_code == 401
    assert auth.SESSION_COOKIE not in refused.cookies
    assert "does not open the console" in refused.text

    accepted = log_in(console)
    assert accepted.status_code == 303 and accepted.headers["location"] == "/console/models"
    cookie = accepted.headers["set-cookie"]
    assert f"{auth.SESSION_COOKIE}=" in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Path=/console" in cookie and "Secure" in cookie
    page = console.get("/console/models")
    assert page.status_code == 200
    assert "v1" in page.text and "production" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]


def test_login_needs_its_form_token_and_redirects_only_inside_the_console(console):
    response = console.post("/console/login", data={"api_key": console.admin_key,
                                                     "login_token": "forged", "next": "/"})
    assert response.status_code == 403
    assert auth.SESSION_COOKIE not in response.cookies
    outside = log_in(console, next_path="https://evil.example/")
    assert outside.headers["location"] == "/console/"


def _session_rows(ctx):
    from sqlalchemy import select

    from app.console.models import ConsoleSession

    with ctx.db.session() as session:
        return list(session.scalars(select(ConsoleSession)))


def test_the_cookie_holds_an_opaque_token_stored_only_as_its_hash(console, ctx):
    """Issue 15 finding 5: the cookie held the API key itself (signed, not encrypted)."""
    import hashlib

    log_in(console)
    token = console.cookies.get(auth.SESSION_COOKIE)
    assert console.admin_key not in token
    key_secret = console.admin_key.split("_", 1)[1]
    assert key_secret not in token and key_secret[:16] not in token
    [row] = _session_rows(ctx)
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in (row.token_hash, row.api_key_id)
    assert row.expires_at > row.created_at and row.revoked_at is None


def test_tampered_or_expired_session_is_a_logged_out_caller(console, ctx):
    import datetime as dt

    from sqlalchemy import update

    from app.console.models import ConsoleSession

    log_in(console)
    token = console.cookies.get(auth.SESSION_COOKIE)
    console.cookies.set(auth.SESSION_COOKIE, token[::-1], path="/console")
    assert console.get("/console/models").status_code == 303
    console.cookies.set(auth.SESSION_COOKIE, "x" * 5000, path="/console")
    assert console.get("/console/models").status_code == 303

    console.cookies.clear()
    log_in(console)
    assert console.get("/console/models").status_code == 200
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    with ctx.db.session() as session:
        session.execute(update(ConsoleSession).values(expires_at=past))
    assert console.get("/console/models").status_code == 303
    # The next login clears expired sessions away.
    console.cookies.clear()
    log_in(console)
    assert len(_session_rows(ctx)) == 1


def test_logout_ends_the_session_and_a_replayed_cookie_is_refused(console, ctx):
    """Issue 15 finding 5: the signed cookie stayed valid after logout for 8 hours."""
    log_in(console)
    token = console.cookies.get(auth.SESSION_COOKIE)
    out = console.post("/console/logout", data={"csrf_token": csrf_of(console)})
    assert out.status_code == 303
    [row] = _session_rows(ctx)
    assert row.revoked_at is not None
    console.cookies.set(auth.SESSION_COOKIE, token, path="/console")  # the old cookie, replayed
    assert console.get("/console/models").status_code == 303
    assert console.get("/console/forget-requests/x/status").status_code == 401


@pytest.mark.parametrize("how", ["api", "cli"])
def test_revoking_the_key_ends_its_console_sessions(console, client, ctx, how):
    from app.auth.service import key_id_of, revoke_key

    key = api_key(ctx, "auditor", name="leaving-auditor")
    log_in(console, key)
    assert console.get("/console/audit").status_code == 200
    if how == "api":
        assert client.post(f"/keys/{key_id_of(key)}/revoke").status_code == 200
    else:  # what `unlearn keys revoke` calls
        with ctx.db.session() as session:
            revoke_key(session, "leaving-auditor", "cli")
    assert console.get("/console/audit").status_code == 303


def test_an_expired_key_ends_its_console_sessions(console, ctx):
    import datetime as dt

    from app.auth.models import ApiKey
    from app.auth.service import key_id_of

    key = api_key(ctx, "auditor", name="temporary-auditor")
    log_in(console, key)
    assert console.get("/console/audit").status_code == 200
    with ctx.db.session() as session:
        session.get(ApiKey, key_id_of(key)).expires_at = (
            dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1))
    assert console.get("/console/audit").status_code == 303


def test_plain_http_needs_the_documented_opt_out(ctx, monkeypatch):
    """Secure by default: over plain HTTP the login page says why the login will not hold;
    UNLEARN_CONSOLE_SECURE_COOKIE=false (what `make run` sets) lets it work there."""
    key = api_key(ctx, "admin", name="local-admin")
    with TestClient(create_app(ctx), base_url="http://testserver",
                    follow_redirects=False) as plain:
        assert 'id="insecure-transport"' in plain.get("/console/login").text
        plain.admin_key = key
        refused = log_in(plain)  # the Secure login-form cookie did not come back
        assert refused.status_code == 403 and auth.SESSION_COOKIE not in refused.cookies
        assert 'id="insecure-transport"' in refused.text
    monkeypatch.setenv("UNLEARN_CONSOLE_SECURE_COOKIE", "false")
    with TestClient(create_app(ctx), base_url="http://testserver",
                    follow_redirects=False) as plain:
        assert 'id="insecure-transport"' not in plain.get("/console/login").text
        plain.admin_key = key
        accepted = log_in(plain)
        assert "Secure" not in accepted.headers["set-cookie"]
        assert "HttpOnly" in accepted.headers["set-cookie"]
        assert plain.get("/console/models").status_code == 200
    with TestClient(create_app(ctx), base_url=CONSOLE_URL) as secure:
        assert 'id="insecure-transport"' not in secure.get("/console/login").text


def test_make_run_serves_the_console_with_the_plain_http_opt_out():
    """`make run` serves plain HTTP on 127.0.0.1: its console login must hold there."""
    from tests.conftest import ROOT

    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^export UNLEARN_CONSOLE_SECURE_COOKIE \?= false$", makefile, re.M)


def test_posts_without_the_csrf_token_are_refused(console, client):
    log_in(console)
    response = file_via_form(console, csrf_token="")
    assert response.status_code == 403
    assert "CSRF" in response.text
    response = file_via_form(console, csrf_token="not-the-token")
    assert response.status_code == 403
    cross_site = console.post("/console/forget-requests",
                              data={"csrf_token": csrf_of(console), "method": "x"},
                              headers={"origin": "https://evil.example"})
    assert cross_site.status_code == 403
    assert client.get("/forget-requests").json()["items"] == []
    # The predict call takes its token in a header.
    instance = [[0.0] * 28 for _ in range(28)]
    denied = console.post("/console/try/predict", json={"versions": [1], "instances": [instance]})
    assert denied.status_code == 403
    # Logging out needs the token too.
    assert console.post("/console/logout", data={"csrf_token": "bad"}).status_code == 403
    out = console.post("/console/logout", data={"csrf_token": csrf_of(console)})
    assert out.status_code == 303
    assert console.get("/console/models").status_code == 303


def test_the_form_shows_the_source_version_before_filing(console):
    log_in(console)
    form = console.get("/console/forget-requests/new")
    assert form.status_code == 200
    hint = re.search(r'id="source-version-hint">(.*?)</span>', form.text, re.S)
    assert hint and "starts from v1" in hint.group(1) and "source_version" in hint.group(1)


def test_try_it_defaults_to_a_parent_and_its_child(console, client):
    child = client.post("/forget-requests?wait=true", json=forget_body(model_version=1))
    assert child.status_code == 200, child.text
    version = child.json()["result_version"]
    # The child in production: the old defaults (production, newest) showed it twice.
    assert client.post(f"/models/{version}/promote").status_code == 200
    log_in(console)
    page = console.get("/console/try").text
    selected = re.findall(r'<select id="version-(left|right)">.*?<option value="(\d+)" selected',
                          page, re.S)
    assert dict(selected) == {"left": "1", "right": str(version)}


def test_membership_figures_are_rounded():
    from app.console.views import flatten

    assert flatten({"mia": {"auc": 0.5123456789, "n": 2000}}) == [("mia.auc", 0.5123),
                                                                   ("mia.n", 2000)]


def test_file_a_request_through_the_form_and_review_it(console, client):
    log_in(console)
    response = file_via_form(console)
    assert response.status_code == 303, response.text
    request_id = response.headers["location"].rsplit("/", 1)[1]
    state = wait_completed(console, request_id)
    assert state["status"] == "completed" and state["result_version"] == 2

    api_view = client.get(f"/forget-requests/{request_id}").json()
    assert api_view["classes"] == [2] and api_view["params"] == {"alpha": 0.01}
    assert api_view["requested_by"] == "officer@example.com"

    page = console.get(f"/console/forget-requests/{request_id}")
    assert page.status_code == 200
    after = api_view["metrics"]["after"]
    assert f"{100 * after['forget']['accuracy']:.2f}%" in page.text
    assert "Forgetting Efficiency" in page.text and "Retention Score" in page.text
    for kind in ("per-class", "confusion-before", "confusion-after"):
        assert f"/console/plots/forget-requests/{request_id}/{kind}.png" in page.text
        plot = console.get(f"/console/plots/forget-requests/{request_id}/{kind}.png")
        assert plot.status_code == 200 and plot.headers["content-type"] == "image/png"
        assert plot.content.startswith(PNG_SIGNATURE) and len(plot.content) > 5000
    # Cached: the second answer is the same bytes.
    again = console.get(f"/console/plots/forget-requests/{request_id}/per-class.png")
    assert again.content == console.get(
        f"/console/plots/forget-requests/{request_id}/per-class.png").content

    # The audit log shows the request's entries, and the actor is the console user.
    audit = console.get("/console/audit", params={"forget_request_id": request_id})
    assert audit.status_code == 200
    for action in ("forget_request.received", "forget_request.started",
                   "forget_request.completed"):
        assert f'data-action="{action}" data-request-id="{request_id}"' in audit.text
    assert "<td>console-admin</td>" in audit.text
    exported = console.get("/console/audit/export",
                           params={"format": "jsonl", "forget_request_id": request_id})
    lines = exported.text.strip().splitlines()
    assert len(lines) == 3 and all(request_id in line for line in lines)
    as_csv = console.get("/console/audit/export", params={"format": "csv"})
    assert as_csv.text.splitlines()[0].startswith("id,seq,created_at,actor,action")

    # The signed erasure certificate, through the console's session.
    assert f'href="/console/forget-requests/{request_id}/certificate"' in page.text
    certificate = console.get(f"/console/forget-requests/{request_id}/certificate")
    assert certificate.status_code == 200 and request_id in certificate.text
    assert certificate.json() == client.get(f"/forget-requests/{request_id}/certificate").json() \
        or "signature" in certificate.text

    listing = console.get("/console/forget-requests", params={"status": "completed"})
    assert request_id in listing.text
    assert request_id not in console.get("/console/forget-requests",
                                         params={"status": "failed"}).text
    assert request_id not in console.get("/console/forget-requests",
                                         params={"since": "2999-01-01T00:00"}).text

    tree = console.get("/console/models").text
    assert '<a class="version" href="/console/models/2">v2</a>' in tree
    assert f"/console/forget-requests/{request_id}" in tree


@pytest.mark.parametrize("fields, field", [
    ({"param.output_dampening.alpha": "1.5"}, "params.alpha"),
    ({"param.output_dampening.alpha": "abc"}, "params.alpha"),
    ({"classes": []}, "classes"),
    ({"subject_reference": ""}, "subject_reference"),
    ({"method": "magic"}, "method"),
    ({"sample_ids": "1 two 3", "classes": []}, "sample_ids"),
    ({"model_version": "99"}, "model_version"),
])
def test_bad_form_input_is_shown_with_its_field_and_files_nothing(console, client, fields, field):
    log_in(console)
    response = file_via_form(console, **fields)
    assert response.status_code in (404, 422), response.text
    assert f"<code>{field}</code>" in response.text
    assert 'id="request-form"' in response.text  # the form again, with what was typed
    assert client.get("/forget-requests").json()["items"] == []


def test_version_page_plots_and_tables(console, ctx):
    log_in(console)
    page = console.get("/console/models/1")
    assert page.status_code == 200
    assert 'alt="Bar chart of version 1' in page.text and 'alt="Heatmap of version 1' in page.text
    assert "Table view" in page.text
    for kind in ("per-class", "confusion"):
        plot = console.get(f"/console/plots/versions/1/{kind}.png")
        assert plot.content.startswith(PNG_SIGNATURE) and len(plot.content) > 5000
    assert console.get("/console/models/7").status_code == 404
    assert console.get("/console/plots/versions/1/nope.png").status_code == 404
    assert console.get("/console/models/abc").status_code == 422


def test_alpha_sweep_matches_a_real_forget_request(console, client):
    """The sweep's α = 0.01 point for class 2 of v1 is what an actual request measures."""
    log_in(console)
    request = client.post("/forget-requests?wait=true", json={
        "classes": [2], "method": "output_dampening", "params": {"alpha": 0.01},
        "requested_by": "x", "subject_reference": "y"}).json()
    after = request["metrics"]["after"]
    before = request["metrics"]["before"]
    from app.console.sweep import alpha_sweep
    from app.registry.service import get_version

    ctx = console.app.state.ctx
    with ctx.db.session() as session:
        version = get_version(session, ctx.model_name, 1)
    rows = {row["alpha"]: row for row in alpha_sweep(ctx, version, 2, (1.0, 0.01))}
    for name in ("forget", "retain", "test_forget", "test_retain"):
        assert rows[0.01][name]["accuracy"] == pytest.approx(after[name]["accuracy"], abs=1e-6)
        assert rows[0.01][name]["loss"] == pytest.approx(after[name]["loss"], rel=1e-4)
        assert rows[1.0][name]["accuracy"] == pytest.approx(before[name]["accuracy"], abs=1e-6)
    assert rows[0.01]["forgetting_efficiency"] == pytest.approx(after["forgetting_efficiency"],
                                                                rel=1e-4)

    page = console.get("/console/sweep", params={"version": 1, "class": 2,
                                                 "alphas": "1, 0.1, 0.01"})
    assert page.status_code == 200
    assert page.text.count("<tr>", page.text.index('id="sweep-table"')) == 4  # head + 3
    assert f"{100 * after['forget']['accuracy']:.2f}%" in page.text
    plot_url = re.search(r'src="(/console/plots/sweep/[^"]+)"', page.text).group(1)
    plot = console.get(plot_url.replace("&amp;", "&"))
    assert plot.content.startswith(PNG_SIGNATURE) and len(plot.content) > 5000
    bad = console.get("/console/sweep", params={"version": 1, "class": 2, "alphas": "2"})
    assert bad.status_code == 422 and "<code>alphas</code>" in bad.text
    assert console.get("/console/sweep", params={"version": 1, "class": 12}).status_code == 422


def test_try_it_predicts_with_two_versions(console, client, small_data, monkeypatch):
    import threading

    from app.prediction import service as prediction_service

    threads = []
    predict = prediction_service.predict

    def recording(*args):
        threads.append(threading.current_thread().name)
        return predict(*args)

    monkeypatch.setattr(prediction_service, "predict", recording)
    log_in(console)
    client.post("/forget-requests?wait=true", json={
        "classes": [1], "method": "output_dampening", "params": {"alpha": 0.01},
        "requested_by": "x", "subject_reference": "y"})
    token = csrf_of(console, "/console/try")
    ones = (small_data.test_labels == 1).nonzero().flatten()
    image = small_data.test_images[int(ones[0]), 0].tolist()
    response = console.post("/console/try/predict", json={"versions": [1, 2], "instances": [image]},
                            headers={"x-csrf-token": token})
    assert response.status_code == 200, response.text
    before, after = response.json()["predictions"]
    assert before["version"] == 1 and before["label"] == 1
    assert after["version"] == 2 and after["label"] != 1 and after["forgotten_classes"] == [1]
    assert after["probabilities"][1] < before["probabilities"][1]
    # Both passes ran on the process's forward thread, as /predict's do.
    assert len(threads) == 2 and all(name.startswith("unlearn-forward") for name in threads)
    bad = console.post("/console/try/predict", json={"versions": [1], "instances": [[[2.0] * 28] * 28]},
                       headers={"x-csrf-token": token})
    assert bad.status_code == 422
    missing = console.post("/console/try/predict", json={"versions": [9], "instances": [image]},
                           headers={"x-csrf-token": token})
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "versions[0]"


def test_a_role_sees_only_its_pages(console, ctx):
    """With a client-only key, the console hides and refuses what that role may not see."""
    log_in(console, api_key(ctx, "client", name="kiosk"))
    models = console.get("/console/models")
    assert models.status_code == 200
    assert 'href="/console/try"' in models.text
    for hidden_link in ("/console/audit", "/console/forget-requests", "/console/sweep"):
        assert f'href="{hidden_link}"' not in models.text
    for path in ("/console/audit", "/console/forget-requests", "/console/forget-requests/new",
                 "/console/sweep"):
        assert console.get(path).status_code == 403, path
    # A version's page is GET /models/{v}'s, open to every role: its test accuracy, but not
    # the per-class figures and confusion matrix that GET /models/{v}/metrics keeps to readers.
    version = console.get("/console/models/1")
    assert version.status_code == 200
    assert 'id="version-accuracy"' in version.text
    assert 'id="version-metrics"' not in version.text and "per-class.png" not in version.text
    assert console.get("/console/plots/versions/1/confusion.png").status_code == 403
    assert console.get("/console/audit/export").status_code == 403


# What a console route answers to a key its page does not admit (app/console/auth.require).
REFUSED_FOR_ROLE = "this page needs one of the roles"
# Console routes that need no login: the login form and logout.
PUBLIC_CONSOLE_ROUTES = {("GET", "/console/login"), ("POST", "/console/login"),
                         ("POST", "/console/logout")}
# Path parameters that get a route past its role check without costly work: an unknown
# request, a plot kind that does not exist, a class that is not a number.
PATH_VALUES = {"version": "1", "request_id": "no-such-request", "kind": "nope", "digit": "x"}


def _console_pages(app):
    """(method, path, page) for every console route; page None where none is declared."""
    from app.auth.deps import _flatten_routes  # the walk role_matrix makes of the API

    for path, route, _ in _flatten_routes(app.routes):
        if not path.startswith("/console"):
            continue
        pages = {getattr(dependency.call, "console_page", None)
                 for dependency in route.dependant.dependencies} - {None}
        assert len(pages) <= 1, (path, pages)
        for method in route.methods - {"HEAD"}:
            yield method, path, next(iter(pages), None)


def test_every_console_page_admits_exactly_the_roles_of_its_api_route(console, ctx):
    """Each console route declares the API operation it mirrors, and a key of each role
    is admitted by the page exactly when the API route admits it: no drift between the
    console's access and the API's role table (issue 13)."""
    from app.auth.deps import role_matrix
    from app.auth.service import Role

    app = console.app
    api_roles = {(method, path): roles for method, path, roles in role_matrix(app)}
    walked = list(_console_pages(app))
    assert len(walked) > 10
    undeclared = {(method, path) for method, path, page in walked if page is None}
    assert undeclared == PUBLIC_CONSOLE_ROUTES, "console routes without an API mirror"
    for role in Role:
        console.cookies.clear()
        assert log_in(console, api_key(ctx, role.value, name=f"walker-{role.value}")) \
            .status_code == 303
        for method, path, page in walked:
            if page is None:
                continue
            mirrored = auth.PAGE_MIRRORS[page]
            allowed = api_roles[mirrored]
            assert allowed is not None, f"{path} mirrors the public route {mirrored}"
            assert auth.page_roles(app, page) == allowed, (path, mirrored)
            url = path.format(**PATH_VALUES)
            # Empty bodies: an admitted caller is answered 4xx by the route's own checks
            # (CSRF, validation), a refused one by the role check, before anything runs.
            response = (console.get(url) if method == "GET"
                        else console.post(url, json={}, headers={"origin": CONSOLE_URL}))
            refused = response.status_code == 403 and REFUSED_FOR_ROLE in response.text
            assert refused == (role.value not in allowed), \
                (role.value, method, path, mirrored, response.status_code, response.text[:200])


def test_console_stays_out_of_the_api_schema(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path.startswith("/console")]


def test_a_failed_request_shows_its_reason_and_no_plots(console, monkeypatch):
    from app.unlearning import output_dampening

    def explode(*args, **kwargs):
        raise RuntimeError("simulated method failure")

    monkeypatch.setattr(output_dampening.OutputDampening, "forget", explode)
    log_in(console)
    request_id = file_via_form(console).headers["location"].rsplit("/", 1)[1]
    assert wait_completed(console, request_id)["status"] == "failed"
    page = console.get(f"/console/forget-requests/{request_id}")
    assert "simulated method failure" in page.text
    assert "/plots/" not in page.text
    assert console.get(f"/console/plots/forget-requests/{request_id}/per-class.png"
                       ).status_code == 404


def test_audit_page_shows_the_chain_verification(console, monkeypatch):
    from dataclasses import dataclass

    from app.audit import service as audit_service

    log_in(console)
    real = console.get("/console/audit").text
    assert 'id="chain-ok"' in real  # the service's own hash chain, verified

    @dataclass
    class Verification:  # the shape of app.audit.chain.Verification
        intact: bool
        entries_checked: int
        head_hash: str
        reason: str | None = None

        def describe(self) -> str:
            return f"BROKEN: {self.reason}"

    monkeypatch.setattr(audit_service, "verify_chain", lambda session: Verification(
        True, 1, "ab" * 32), raising=False)
    page = console.get("/console/audit").text
    assert 'id="chain-ok"' in page and "1 entries" in page
    monkeypatch.setattr(audit_service, "verify_chain", lambda session: Verification(
        False, 1, "ab" * 32, "entry 1 was changed"), raising=False)
    page = console.get("/console/audit").text
    assert 'id="chain-broken"' in page and "entry 1 was changed" in page


def test_audit_log_pages_and_filters(console, ctx):
    from app.audit.service import AuditAction, record

    with ctx.db.session() as session:
        for number in range(30):
            record(session, AuditAction.version_promoted, f"tester-{number % 2}",
                   model_name=ctx.model_name, model_version=1, details={"n": number})
    log_in(console)
    first = console.get("/console/audit")
    assert first.text.count('data-action="model.promoted"') == 25
    next_link = re.search(r'href="\?([^"]+)" id="audit-next"', first.text)
    assert next_link
    second = console.get("/console/audit?" + next_link.group(1).replace("&amp;", "&"))
    # 30 promotions plus the registration and key entries, 25 per page.
    from app.audit.models import AuditEntry
    from sqlalchemy import func, select

    with ctx.db.session() as session:
        total = session.scalar(select(func.count()).select_from(AuditEntry))
    assert total > 30
    assert second.text.count("<tr data-action=") == total - 25
    assert 'id="audit-next"' not in second.text
    only = console.get("/console/audit", params={"actor": "tester-1"})
    assert only.text.count('data-action="model.promoted"') == 15
    assert "tester-0" not in only.text.split('id="audit-list"')[1]
    bad = console.get("/console/audit", params={"since": "yesterday"})
    assert bad.status_code == 422 and "<code>since</code>" in bad.text
    assert console.get("/console/audit", params={"action": "nope"}).status_code == 422


def test_an_auditor_reads_but_cannot_file(console, client, ctx):
    log_in(console, api_key(ctx, "auditor", name="auditor-1"))
    token = csrf_of(console)
    listing = console.get("/console/forget-requests")
    assert listing.status_code == 200
    assert "/console/forget-requests/new" not in listing.text
    assert console.get("/console/audit").status_code == 200
    assert console.get("/console/forget-requests/new").status_code == 403
    refused = console.post("/console/forget-requests", data={
        "csrf_token": token, "method": "output_dampening", "classes": ["2"],
        "param.output_dampening.alpha": "0.01", "requested_by": "a", "subject_reference": "b"})
    assert refused.status_code == 403
    assert client.get("/forget-requests").json()["items"] == []
    # Try it is POST /predict's, which auditors may call (to compare versions).
    assert console.get("/console/try").status_code == 200


def test_the_console_export_is_the_audit_export_with_its_formula_guard(console, ctx):
    """Issue 13: the console re-implemented the export without the CSV formula guard of
    app/audit/export.py, so an actor like this one ran as a formula in a spreadsheet."""
    import csv
    import io

    from app.audit.service import AuditAction, record

    evil = "=cmd|' /C calc'!A0"
    with ctx.db.session() as session:
        record(session, AuditAction.version_promoted, evil, model_name=ctx.model_name,
               model_version=1, details={"note": "+1+1"})
    log_in(console)
    exported = console.get("/console/audit/export", params={"format": "csv", "actor": evil})
    assert exported.status_code == 200
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [row["actor"] for row in rows] == ["'" + evil]
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in rows
                   for cell in row.values() if cell)
    # The same bytes as the API's export of the same entries (the one export).
    api = TestClient(console.app).get(
        "/audit-log/export", params={"format": "csv"},
        headers={"Authorization": f"Bearer {console.admin_key}"})
    assert "'" + evil in api.text and exported.text.splitlines()[1] in api.text.splitlines()


def test_a_double_submitted_form_files_one_request(console, client):
    """Issue 13: console filing went around the API's idempotent filing; the form now
    carries an idempotency key, made when it renders, through submit_request."""
    log_in(console)
    form = console.get("/console/forget-requests/new").text
    key = hidden(form, "idempotency_key")
    assert key and key != hidden(console.get("/console/forget-requests/new").text,
                                 "idempotency_key")
    first = file_via_form(console, idempotency_key=key)
    second = file_via_form(console, idempotency_key=key)
    assert first.status_code == second.status_code == 303
    assert first.headers["location"] == second.headers["location"]
    assert len(client.get("/forget-requests").json()["items"]) == 1
    # The same key with another body is the API's conflict, shown on the form.
    other = file_via_form(console, idempotency_key=key, classes=["3"])
    assert other.status_code == 409 and 'id="request-form"' in other.text
    assert len(client.get("/forget-requests").json()["items"]) == 1
