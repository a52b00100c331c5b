"""Issue 15, finding 8: security headers on API answers, and /docs and /redoc served
without any other host (their assets come from this origin, under a strict CSP)."""

from __future__ import annotations

import re

import pytest

EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.IGNORECASE)


def test_api_answers_carry_security_headers(client):
    for response in (client.get("/healthz"), client.get("/models"),
                     client.get("/models/999999"),  # an error in the error shape
                     client.post("/predict", content=b"x" * 32,
                                 headers={"Content-Length": str(10**9)})):  # a 413
        headers = response.headers
        assert headers["x-content-type-options"] == "nosniff", response.url
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
    # The test client sends its key: authenticated answers are never stored by caches.
    assert client.get("/models").headers["cache-control"] == "no-store"


def test_console_pages_keep_their_own_policy(client):
    page = client.get("/console/login")
    assert "form-action 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_docs_pages_load_nothing_from_other_hosts(client, path):
    page = client.get(path)
    assert page.status_code == 200
    assert not EXTERNAL.search(page.text), EXTERNAL.search(page.text)
    assert "cdn.jsdelivr.net" not in page.text and "fonts.googleapis" not in page.text
    policy = page.headers["content-security-policy"]
    assert "https:" not in policy and "'unsafe-eval'" not in policy
    assert "script-src 'self'" in policy
    if path == "/docs":  # its one inline start-up script is admitted by hash only
        assert "'sha256-" in policy and "'unsafe-inline'" not in policy.split("style-src")[0]
    for asset in re.findall(r"""(?:src|href)="(/docs-assets/[^"]+)\"""", page.text):
        served = client.get(asset)
        assert served.status_code == 200 and len(served.content) > 1000, asset
