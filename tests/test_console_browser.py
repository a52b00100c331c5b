"""The review console in a real browser: headless Chromium driven by Playwright against the
app served by uvicorn on a free loopback port.

The browser is the system's Chromium (Debian's ``chromium`` package; ``.ci/run`` installs
it), never a Playwright download. Where it cannot be found the tests skip and say why,
except in CI (``CI`` set), where that is a failure. Screenshots of every page land in
``test-artifacts/console/``; with ``UNLEARN_UPDATE_DOCS_SCREENSHOTS=1`` the main pages'
are also copied to ``docs/screenshots/`` for the README.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from app.main import create_app
from tests.conftest import ROOT, _unavailable, api_key

ARTIFACTS = ROOT / "test-artifacts" / "console"
DOCS_SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


def find_chromium() -> str | None:
    configured = os.environ.get("UNLEARN_CHROMIUM")
    if configured:
        return configured if Path(configured).exists() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:
        _unavailable(f"playwright is not installed ({error}); pip install -e '.[dev]'")
    executable = find_chromium()
    if executable is None:
        _unavailable("no Chromium found (apt-get install chromium, or set UNLEARN_CHROMIUM "
                     "to a Chromium binary)")
    playwright = sync_playwright().start()
    try:
        launched = playwright.chromium.launch(executable_path=executable, headless=True,
                                              args=CHROMIUM_FLAGS)
    except Exception as error:
        playwright.stop()
        _unavailable(f"Chromium at {executable} would not start: {error}")
    yield launched
    launched.close()
    playwright.stop()


class LiveServer:
    """The app on uvicorn in a background thread, bound to a free 127.0.0.1 port."""

    def __init__(self, app):
        import uvicorn

        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run,
                                       kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.socket.close()


@pytest.fixture
def live_console(ctx, monkeypatch):
    # Served over plain HTTP on loopback, as `make run` does: the documented opt-out from
    # Secure cookies (docs/console.md) is what lets a browser keep the session there.
    monkeypatch.setenv("UNLEARN_CONSOLE_SECURE_COOKIE", "false")
    with LiveServer(create_app(ctx)) as server:
        server.admin_key = api_key(ctx, "admin", name="browser-admin")
        yield server


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10000)
    problems: list[str] = []
    # A CSP violation, a script error or a failed load shows up here; the pages must have
    # none, apart from the deliberate wrong-key login (401).
    page.on("console", lambda message: message.type == "error"
            and not message.text.startswith("Failed to load resource")
            and problems.append(message.text))
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("response", lambda response: response.status >= 400
            and not (response.status == 401 and response.url.endswith("/console/login"))
            and problems.append(f"{response.status} {response.url}"))
    page.problems = problems
    yield page
    context.close()


def screenshot(page, name: str, for_docs: bool = False) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if for_docs and os.environ.get("UNLEARN_UPDATE_DOCS_SCREENSHOTS") == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_SCREENSHOTS / f"console-{name}.png")
    return path


def assert_images_loaded(page, selector: str, min_width: int = 300, min_height: int = 200):
    page.wait_for_function(
        "s => [...document.querySelectorAll(s)].every(i => i.complete && i.naturalWidth > 0)",
        arg=selector, timeout=15000)
    sizes = page.eval_on_selector_all(
        selector, "images => images.map(i => [i.naturalWidth, i.naturalHeight, i.alt])")
    assert sizes, f"no image matches {selector}"
    for width, height, alt in sizes:
        assert width >= min_width and height >= min_height, (selector, width, height)
        assert len(alt) > 40, f"{selector} lacks a useful alt text"


def draw_stroke(page, points: list[tuple[float, float]]) -> None:
    box = page.locator("#pad").bounding_box()
    page.mouse.move(box["x"] + points[0][0], box["y"] + points[0][1])
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(box["x"] + x, box["y"] + y, steps=8)
    page.mouse.up()


def test_review_flow_in_a_real_browser(live_console, page, monkeypatch, small_data,
                                       tmp_path):
    import torch
    from PIL import Image

    from app.unlearning import output_dampening

    # Slow the method down a little, so that the page is seen following a running request.
    original = output_dampening.OutputDampening.forget

    def slow_forget(self, *args, **kwargs):
        time.sleep(1.5)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(output_dampening.OutputDampening, "forget", slow_forget)
    base = live_console.url

    # Log in: the console sends us to the login form and back.
    page.goto(f"{base}/console/")
    assert "/console/login" in page.url
    screenshot(page, "login", for_docs=True)
    page.fill("#api_key", "not-the-key-000")
    page.click("#login-form button[type=submit]")
    assert "does not open the console" in page.inner_text("main")
    page.fill("#api_key", live_console.admin_key)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(f"{base}/console/models")
    cookie = next(c for c in page.context.cookies() if c["name"] == "unlearn_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
    assert page.evaluate("document.cookie") == ""  # invisible to scripts
    assert page.locator("#version-tree .node").count() == 1

    # File a forget request for class 1 through the form.
    page.click("header nav a[href='/console/forget-requests/new']")
    page.check("input[name=classes][value='1']")
    page.select_option("#method-select", "output_dampening")
    page.fill("input[name='param.output_dampening.alpha']", "0.01")
    page.fill("input[name=subject_reference]", "GDPR-BROWSER-0001")
    page.fill("textarea[name=reason]", "Art. 17 request filed from the console")
    screenshot(page, "new-request", for_docs=True)
    page.click("#submit-request")
    page.wait_for_url(f"{base}/console/forget-requests/*")
    request_id = page.url.rsplit("/", 1)[1]

    # Watch it complete: the page starts unfinished and follows the request by itself.
    assert page.get_attribute("#request-status", "data-finished") == "false"
    assert page.inner_text("#status-text") in ("queued", "running")
    page.wait_for_selector("#request-status[data-finished=true]", timeout=30000)
    assert page.inner_text("#status-text") == "completed"
    assert page.inner_text("#result-version") == "v2"
    assert_images_loaded(page, "#plot-per-class")
    assert_images_loaded(page, "#plot-confusion-before, #plot-confusion-after")
    assert "Forgetting Efficiency" in page.inner_text("#before-after")
    screenshot(page, "forget-request", for_docs=True)

    # A second request through the API branches the lineage: v1 -> v2 and v1 -> v3.
    import httpx

    second = httpx.post(f"{base}/forget-requests?wait=true", timeout=30,
                        headers={"Authorization": f"Bearer {live_console.admin_key}"}, json={
        "classes": [7], "method": "output_dampening", "params": {"alpha": 0.1},
        "model_version": 1, "requested_by": "api-client", "subject_reference": "GDPR-API-0002"})
    assert second.json()["result_version"] == 3

    # The lineage tree, and the new version's own page with plots.
    page.goto(f"{base}/console/models")
    assert page.locator("#version-tree .node").count() == 3
    for child in ("2", "3"):
        assert page.locator(f"#version-tree > li > ul .node[data-version='{child}']").count() == 1
    screenshot(page, "models", for_docs=True)
    page.goto(f"{base}/console/models/2")
    assert_images_loaded(page, "img.plot")
    screenshot(page, "version", for_docs=True)

    # Draw a "1" and compare the two versions side by side.
    page.goto(f"{base}/console/try?left=1&right=2")
    draw_stroke(page, [(150, 40), (145, 120), (140, 240)])
    page.wait_for_selector("#try[data-predicted=true]", timeout=15000)
    before_label = page.get_attribute("#answer-left", "data-label")
    after_label = page.get_attribute("#answer-right", "data-label")
    before_one = float(page.inner_text("#answer-left tr[data-class='1'] .value").rstrip("%"))
    after_one = float(page.inner_text("#answer-right tr[data-class='1'] .value").rstrip("%"))
    assert before_label == "1", f"version 1 read the drawn 1 as {before_label}"
    assert after_label != "1" and after_one < before_one
    screenshot(page, "try-it", for_docs=True)

    # Or load a PNG: a real test image of a 1, as a dark-on-light picture (inverted by
    # the page, as MNIST digits are light on dark), larger than 28x28.
    ones = (small_data.test_labels == 1).nonzero().flatten()
    pixels = (255 - small_data.test_images[int(ones[0]), 0] * 255).to(torch.uint8).numpy()
    png = tmp_path / "one.png"
    Image.fromarray(pixels).resize((112, 112)).save(png)
    page.evaluate("document.getElementById('try').dataset.predicted = 'false'")
    page.set_input_files("#upload", str(png))
    page.wait_for_selector("#try[data-predicted=true]", timeout=15000)
    assert page.get_attribute("#answer-left", "data-label") == "1"
    assert page.get_attribute("#answer-right", "data-label") != "1"

    # The α sweep for the forgotten class.
    page.goto(f"{base}/console/sweep?version=1&class=1")
    assert_images_loaded(page, "#plot-sweep")
    assert page.locator("#sweep-table tbody tr").count() == 7
    screenshot(page, "alpha-sweep", for_docs=True)

    # The request's entries in the audit log, reached from the request's page.
    page.goto(f"{base}/console/forget-requests/{request_id}")
    page.click("#audit-link")
    actions = page.eval_on_selector_all(
        f"#audit-list tr[data-request-id='{request_id}']",
        "rows => rows.map(r => r.dataset.action)")
    # Version 1 holds the erased class: the admin's two Try-it comparisons against it are
    # audited under the request, as /predict audits them (issue 10).
    assert sorted(actions) == ["forget_request.completed", "forget_request.received",
                               "forget_request.started", "prediction.superseded_version",
                               "prediction.superseded_version"]
    page.goto(f"{base}/console/audit")
    screenshot(page, "audit-log", for_docs=True)
    page.goto(f"{base}/console/forget-requests")
    assert page.locator(f"tr[data-request-id='{request_id}']").count() == 1
    screenshot(page, "forget-requests", for_docs=True)

    assert page.problems == [], page.problems
