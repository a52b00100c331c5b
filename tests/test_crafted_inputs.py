"""A corpus of crafted inputs from the attack drill, each of which once answered 500 (and
dropped the connection): every one must now be a 4xx in the API's error shape, naming the
field where there is one. Runs on SQLite and PostgreSQL (which refuses NUL characters,
lone surrogates and integers >= 2**31 that SQLite stores)."""

from __future__ import annotations

import base64
import json
import struct
import zlib

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import api_key, forget_body
from tests.test_console import CONSOLE_URL, log_in


def _cursor(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def _png_header(width: int, height: int) -> str:
    """A PNG whose header claims width x height (PIL's decompression-bomb check fires on
    the header alone)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    raw = (b"\x89PNG\r\n\x1a\n"
           + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    return base64.b64encode(raw).decode()


BIG = 2**31
NUL_ID_CURSOR = _cursor(["2026-01-01T00:00:00+00:00", "a\u0000"])
SURROGATE_ID_CURSOR = _cursor(["2026-01-01T00:00:00+00:00", "\ud800"])
IMAGE = [[0.5] * 28 for _ in range(28)]


def _with_pixel(value) -> list:
    image = [row[:] for row in IMAGE]
    image[3][4] = value
    return [image]


# (method, path, JSON body or None, field the error names or None)
API_CORPUS = [
    ("POST", "/predict", {"images": [_png_header(20000, 20000)]}, "images[0]"),
    ("POST", "/predict", {"images": [_png_header(1_000_000, 1_000_000)]}, "images[0]"),
    ("POST", "/predict", {"instances": _with_pixel(True)}, "instances[0]"),
    ("POST", "/predict", {"instances": _with_pixel(False)}, "instances[0]"),
    ("POST", "/predict", {"instances": _with_pixel("0.5")}, "instances[0]"),
    ("POST", "/predict", {"instances": _with_pixel(None)}, "instances[0]"),
    ("POST", "/predict", {"instances": [[[True] * 28] * 28]}, "instances[0]"),
    ("POST", "/predict", {"model_version": BIG, "instances": [IMAGE]}, "model_version"),
    ("GET", f"/audit-log?cursor={_cursor(True)}", None, "cursor"),
    ("GET", f"/audit-log?cursor={_cursor(BIG)}", None, "cursor"),
    ("GET", f"/audit-log?cursor={_cursor(-1)}", None, "cursor"),
    ("GET", f"/audit-log?model_version={BIG}", None, "model_version"),
    ("GET", "/audit-log?actor=a%00b", None, "actor"),
    ("GET", f"/audit-log/verify?anchor_seq={BIG}&anchor_hash={'0' * 64}", None, "anchor_seq"),
    ("GET", f"/forget-requests?cursor={_cursor(True)}", None, "cursor"),
    ("GET", f"/forget-requests?cursor={_cursor(['2026-01-01T00:00:00', 'x'])}", None, "cursor"),
    ("GET", f"/forget-requests?cursor={NUL_ID_CURSOR}",
     None, "cursor"),
    ("GET", f"/forget-requests?cursor={SURROGATE_ID_CURSOR}",
     None, "cursor"),
    ("GET", f"/forget-requests?cursor={_cursor([True, True])}", None, "cursor"),
    ("GET", "/forget-requests/%00", None, None),
    ("GET", "/forget-requests/%ED%A0%80", None, None),
    ("GET", "/forget-requests/%ED%A0%80/certificate", None, None),
    ("GET", f"/models?cursor={_cursor(True)}", None, "cursor"),
    ("GET", f"/models?cursor={_cursor(BIG)}", None, "cursor"),
    ("GET", f"/models/{BIG}", None, "version"),
    ("GET", f"/models/{BIG}/metrics", None, "version"),
    ("POST", f"/models/{BIG}/promote", None, "version"),
    ("POST", "/forget-requests", forget_body(subject_reference="\ud800"), "subject_reference"),
    ("POST", "/forget-requests", forget_body(requested_by="a\u0000b"), "requested_by"),
    ("POST", "/forget-requests", forget_body(model_version=BIG), "model_version"),
    ("POST", "/forget-requests", forget_body(classes=[], sample_ids=[BIG], method="ssd", params={}),
     "sample_ids[0]"),
    ("POST", "/keys", {"name": "k\ud800", "roles": ["client"]}, "name"),
    ("POST", "/keys/%ED%A0%80/revoke", None, None),
]


def _send(client: TestClient, method: str, path: str, body):
    if body is None:
        return client.request(method, path)
    # json.dumps keeps lone surrogates as \ud800 escapes, as an attacker's client would.
    return client.request(method, path, content=json.dumps(body).encode(),
                          headers={"content-type": "application/json"})


@pytest.fixture
def crafted_client(ctx):
    # Server errors come back as responses (500), so that one run lists every failure.
    with TestClient(create_app(ctx), raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {api_key(ctx, name='crafted-admin')}"
        yield client


def test_crafted_api_inputs_are_refused_with_4xx(crafted_client):
    client = crafted_client
    failures = []
    for method, path, body, field in API_CORPUS:
        response = _send(client, method, path, body)
        problem = None
        if not 400 <= response.status_code < 500:
            problem = f"status {response.status_code}"
        else:
            error = response.json().get("error") or {}
            if not error.get("code") or not error.get("message"):
                problem = f"not the error shape: {response.text[:200]}"
            elif field is not None and error.get("field") != field:
                problem = f"field {error.get('field')!r}, expected {field!r}"
        if problem:
            failures.append(f"{method} {path[:80]}: {problem}: {response.text[:160]}")
    assert not failures, "\n".join(failures)


CONSOLE_CORPUS = [
    f"/console/models/{BIG}",
    f"/console/models/{-BIG}",
    f"/console/plots/versions/{BIG}/per-class.png",
    f"/console/plots/sweep/{BIG}/2.png",
    f"/console/plots/sweep/1/{BIG}.png",
    f"/console/sweep?version={BIG}&class=2",
    f"/console/sweep?version=1&class={BIG}",
    f"/console/audit?model_version={BIG}",
    f"/console/audit?cursor={_cursor(True)}",
    f"/console/audit?cursor={_cursor(BIG)}",
    f"/console/forget-requests?cursor={_cursor(True)}",
    f"/console/forget-requests?cursor={_cursor(['2026-01-01T00:00:00', 'x'])}",
    f"/console/forget-requests?cursor={SURROGATE_ID_CURSOR}",
    "/console/forget-requests/%ED%A0%80",
    "/console/forget-requests/%ED%A0%80/status",
    "/console/plots/forget-requests/%ED%A0%80/per-class.png",
]


def test_crafted_console_inputs_are_refused_with_4xx(ctx):
    with TestClient(create_app(ctx), base_url=CONSOLE_URL, follow_redirects=False,
                    raise_server_exceptions=False) as console:
        console.admin_key = api_key(ctx, "admin", name="console-admin")
        assert log_in(console).status_code == 303
        failures = []
        for path in CONSOLE_CORPUS:
            response = console.get(path)
            if not 400 <= response.status_code < 500:
                failures.append(f"{path}: status {response.status_code}")
        body = {"versions": [BIG], "instances": [IMAGE]}
        csrf = __import__("tests.test_console", fromlist=["csrf_of"]).csrf_of(console)
        response = console.post("/console/try/predict", json=body,
                                 headers={"x-csrf-token": csrf})
        if not 400 <= response.status_code < 500:
            failures.append(f"/console/try/predict versions=[2**31]: {response.status_code}")
        response = console.post("/console/try/predict",
                                json={"versions": [1], "instances": [_with_pixel(True)[0]]},
                                headers={"x-csrf-token": csrf})
        if response.status_code != 422:
            failures.append(f"/console/try/predict pixel true: {response.status_code}")
    assert not failures, "\n".join(failures)
