"""The API as a newcomer first meets it: one error shape (validation_error with details),
readable invalid-JSON errors, data-URL PNGs, a missing 'Bearer', list and detail views that
agree, summaries in lists, the real audit head beside an anchor mismatch, and a request
that says it started from the production version by default."""

from __future__ import annotations

import base64
import io

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from tests.conftest import api_key, forget_body


def test_every_422_is_validation_error_with_details(client):
    schema_error = client.post("/forget-requests", json=forget_body(params={"alpha": -1}))
    domain_error = client.post("/forget-requests", json=forget_body(classes=[99]))
    for response in (schema_error, domain_error):
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "validation_error"
        assert error["details"] and error["details"][0]["field"] == error["field"]


def test_invalid_json_body_names_line_and_column(client):
    response = client.post("/forget-requests", content=b'{"classes": [2],\n "method": x}',
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error" and error["field"] == "body"
    assert error["message"].startswith("the body is not valid JSON: ")
    assert error["message"].endswith("at line 2 column 12"), error["message"]


def _png_base64() -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_predict_accepts_a_data_url_png(client):
    plain = client.post("/predict", json={"images": [_png_base64()]})
    data_url = client.post("/predict", json={"images": ["data:image/png;base64," + _png_base64()]})
    assert plain.status_code == data_url.status_code == 200, data_url.text
    assert plain.json()["predictions"] == data_url.json()["predictions"]


def test_a_key_without_bearer_is_told_the_scheme_is_missing(ctx):
    token = api_key(ctx, name="no-scheme")
    with TestClient(create_app(ctx)) as bare:
        response = bare.get("/models", headers={"Authorization": token})
        assert response.status_code == 401
        assert "lacks its scheme" in response.json()["error"]["message"]
        assert bare.get("/models").json()["error"]["message"].startswith("an API key is required")


def test_lists_are_summaries_and_agree_with_the_detail(client):
    filed = client.post("/forget-requests?wait=true", json=forget_body())
    assert filed.status_code == 200, filed.text
    assert filed.json()["source_version_was_default"] is True
    explicit = client.post("/forget-requests", json=forget_body(model_version=1))
    assert explicit.json()["source_version_was_default"] is False

    requests = client.get("/forget-requests").json()["items"]
    assert requests and all("metrics" not in item for item in requests)
    with_metrics = client.get("/forget-requests", params={"include": "metrics"}).json()["items"]
    assert all("metrics" in item for item in with_metrics)
    assert client.get(f"/forget-requests/{filed.json()['id']}").json()["metrics"]["after"]

    versions = client.get("/models").json()["items"]
    assert all("forgotten_sample_ids" not in v and "model_card" not in v for v in versions)
    detail = client.get("/models/1").json()
    assert detail["forgotten_sample_ids"] == []  # never null
    included = client.get("/models", params={"include": ["forgotten_sample_ids", "model_card"]})
    first = next(v for v in included.json()["items"] if v["version"] == 1)
    assert first["forgotten_sample_ids"] == [] and first["model_card"] == detail["model_card"]
    assert client.get("/models", params={"include": "nope"}).status_code == 422


def test_verify_with_a_wrong_anchor_reports_the_real_head(client):
    intact = client.get("/audit-log/verify").json()
    wrong = client.get("/audit-log/verify",
                       params={"anchor_seq": 1, "anchor_hash": "0" * 64}).json()
    assert wrong["intact"] is False and wrong["anchor_matches"] is False
    assert wrong["chain_intact"] is True and wrong["broken_seq"] is None
    assert (wrong["head_seq"], wrong["head_hash"]) == (intact["head_seq"], intact["head_hash"])
