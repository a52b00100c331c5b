"""Hardened inputs: body size, batch and sample-ID limits, string lengths, NaN/inf, NUL,
out-of-range numbers and dates -- each a 4xx naming the reason, never a 5xx."""

from __future__ import annotations

import dataclasses

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import forget_body


@pytest.fixture
def small_limits_client(ctx):
    settings = ctx.settings.model_copy(update={"max_body_bytes": 20_000, "max_predict_batch": 3,
                                               "max_sample_ids": 5})
    limited = dataclasses.replace(ctx, settings=settings)
    with TestClient(create_app(limited), headers=dict(_admin(ctx))) as client:
        yield client


def _admin(ctx):
    from tests.conftest import api_key

    return {"Authorization": f"Bearer {api_key(ctx, name='limits-admin')}"}


def test_body_over_the_limit_is_413_declared_or_streamed(small_limits_client):
    big = {"instances": [[[0.5] * 28] * 28] * 10}
    declared = small_limits_client.post("/predict", json=big)
    assert declared.status_code == 413
    assert declared.json()["error"]["code"] == "payload_too_large"

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(25):
            yield b" " * 1000

    streamed = small_limits_client.post("/predict", content=chunks(),
                                        headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert "20000 bytes" in streamed.json()["error"]["message"]
    ok = small_limits_client.post("/predict", json={"instances": [[[0.5] * 28] * 28]})
    assert ok.status_code == 200


def test_batch_and_sample_id_limits(small_limits_client):
    image = [[0.0] * 28] * 28
    assert small_limits_client.post("/predict", json={"instances": [image] * 3}).status_code == 200
    too_many = small_limits_client.post("/predict", json={"instances": [image] * 4})
    assert too_many.status_code == 413 and too_many.json()["error"]["field"] == "instances"
    ids = small_limits_client.post("/forget-requests", json=forget_body(
        classes=[], sample_ids=list(range(6)), method="output_dampening"))
    # output_dampening forgets classes only; the limit applies first for any method.
    assert ids.status_code in (413, 422)
    assert ids.json()["error"]["field"] == "sample_ids"


FORGET_REQUEST_CASES = [
    ({"requested_by": "x" * 201}, "requested_by"),
    ({"subject_reference": "x" * 201}, "subject_reference"),
    ({"reason": "x" * 2001}, "reason"),
    ({"method": "m" * 65}, "method"),
    ({"requested_by": "nul\x00byte"}, "requested_by"),
    ({"model_version": 2**40}, "model_version"),
    ({"classes": [2] * 1001}, "classes"),  # the schema's bound since issue 9 (1000)
]


def test_forget_request_strings_and_numbers_are_bounded(client):
    for override, field in FORGET_REQUEST_CASES:
        response = client.post("/forget-requests", json=forget_body(**override))
        assert response.status_code == 422, (override, response.text)
        assert response.json()["error"]["field"] == field, override


@pytest.mark.parametrize("pixel", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_pixels_are_422(client, pixel):
    row = "[" + ",".join(["0.0"] * 27 + [pixel]) + "]"
    body = '{"instances": [[' + ",".join([row] * 28) + "]]}"
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "instances[0]"


QUERY_AND_PATH_CASES = [
    ("/audit-log?actor=a%00b", "actor"),
    ("/forget-requests?subject_reference=%00", "subject_reference"),
    ("/forget-requests/abc%00def", "path"),
    ("/audit-log?since=0001-01-01T00:00:00%2B14:00", "since"),
    ("/models/99999999999", "version"),
]


def test_query_and_path_oddities_are_4xx_on_both_databases(client):
    for url, field in QUERY_AND_PATH_CASES:
        response = client.get(url)
        assert 400 <= response.status_code < 500, (url, response.text)
        assert response.json()["error"]["field"] == field, url
    response = client.post("/predict", json={"model_version": 2**40,
                                                 "instances": [[[0.0] * 28] * 28]})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "model_version"


def test_malformed_json_and_deep_nesting_are_400_not_500(client):
    for body in ("{not json", "[" * 100_000):
        response = client.post("/predict", content=body,
                               headers={"content-type": "application/json"})
        assert response.status_code in (400, 422), response.text
