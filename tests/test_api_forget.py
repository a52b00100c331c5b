"""Forget requests through the HTTP API: the happy path, lineage, and bad input."""

import pytest

from tests.conftest import forget_body


def test_forget_request_produces_a_new_version_with_lineage(client):
    response = client.post("/forget-requests?wait=true", json=forget_body())
    assert response.status_code == 200, response.text
    request = response.json()
    assert request["status"] == "completed"
    assert request["source_version"] == 1
    assert request["result_version"] == 2
    assert request["method"] == "output_dampening"
    assert request["params"] == {"alpha": 0.01}
    assert request["duration_s"] is not None and request["duration_s"] >= 0

    before, after = request["metrics"]["before"], request["metrics"]["after"]
    for name in ("forget", "retain", "test_forget", "test_retain"):
        assert set(before[name]) >= {"accuracy", "loss", "per_class_accuracy",
                                     "confusion_matrix", "count"}
    assert before["forget"]["accuracy"] > 0.8
    assert after["forget"]["accuracy"] < 0.1
    assert after["test_forget"]["accuracy"] < 0.1
    assert after["forget"]["loss"] > before["forget"]["loss"]
    assert after["forgetting_efficiency"] is not None and after["retention_score"] is not None
    # Only class 2 images are in the forget sets.
    confusion = after["forget"]["confusion_matrix"]
    assert all(sum(confusion[i]) == 0 for i in range(10) if i != 2)
    assert sum(confusion[2]) == after["forget"]["count"] == before["forget"]["count"]

    version = client.get("/models/2").json()
    assert version["parent_version"] == 1
    assert version["forget_request_id"] == request["id"]
    assert version["forgotten_classes"] == [2]
    assert version["is_production"] is False
    assert version["method"] == "output_dampening"

    # A second request from version 2 inherits what version 2 forgot.
    second = client.post("/forget-requests?wait=true",
                         json=forget_body(classes=[5], model_version=2)).json()
    assert second["status"] == "completed"
    child = client.get(f"/models/{second['result_version']}").json()
    assert child["forgotten_classes"] == [2, 5]
    assert child["parent_version"] == 2


def test_request_without_wait_is_queued_then_completes(client):
    response = client.post("/forget-requests", json=forget_body())
    assert response.status_code == 202
    body = response.json()
    assert body["status"] in ("queued", "running", "completed")
    assert response.headers["Location"] == f"/forget-requests/{body['id']}"
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        current = client.get(f"/forget-requests/{body['id']}").json()
        if current["status"] == "completed":
            break
        time.sleep(0.05)
    assert current["status"] == "completed"
    listed = client.get("/forget-requests").json()
    assert [item["id"] for item in listed["items"]] == [body["id"]]


@pytest.mark.parametrize("override, field", [
    ({"classes": [10]}, "classes[0]"),
    ({"classes": [-1]}, "classes[0]"),
    ({"classes": []}, "classes"),
    ({"params": {"alpha": 0}}, "params.alpha"),
    ({"params": {"alpha": 1.5}}, "params.alpha"),
    ({"params": {}}, "params.alpha"),
    ({"params": {"alpha": 0.5, "lambda": 2}}, "params.lambda"),
    ({"method": "magic"}, "method"),
    ({"sample_ids": [1, 2, 3], "classes": []}, "sample_ids"),
    ({"subject_reference": ""}, "subject_reference"),
    ({"model_version": 0}, "model_version"),
    ({"unexpected": 1}, "unexpected"),
])
def test_bad_forget_requests_are_422_naming_the_field(client, override, field):
    response = client.post("/forget-requests", json=forget_body(**override))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field
    assert error["message"]
    # Nothing was queued, and nothing was audited as received.
    assert client.get("/forget-requests").json()["items"] == []
    actions = [e["action"] for e in client.get("/audit-log").json()["items"]]
    assert "forget_request.received" not in actions


def test_nan_alpha_is_rejected(client):
    body = '{"classes": [2], "method": "output_dampening", "params": {"alpha": NaN},' \
           ' "requested_by": "x", "subject_reference": "y"}'
    response = client.post("/forget-requests", content=body,
                           headers={"content-type": "application/json"})
    assert response.status_code == 422


def test_unknown_source_version_and_request_are_404(client):
    response = client.post("/forget-requests", json=forget_body(model_version=99))
    assert response.status_code == 404
    assert response.json()["error"]["field"] == "model_version"
    assert client.get("/forget-requests/nope").status_code == 404
    assert client.get("/models/99").status_code == 404
    assert client.get("/models/99/metrics").status_code == 404


def test_method_failure_marks_request_failed_and_publishes_nothing(client, ctx, monkeypatch):
    from app.unlearning import output_dampening

    def explode(*args, **kwargs):
        raise RuntimeError("simulated method failure")

    monkeypatch.setattr(output_dampening.OutputDampening, "forget", explode)
    response = client.post("/forget-requests?wait=true", json=forget_body())
    body = response.json()
    assert body["status"] == "failed"
    assert "simulated method failure" in body["error"]
    assert body["result_version"] is None
    assert [v["version"] for v in client.get("/models").json()["items"]] == [1]
    failed = client.get("/audit-log", params={"action": "forget_request.failed"}).json()["items"]
    assert failed and failed[0]["forget_request_id"] == body["id"]
    # No artifact other than version 1's remains in the store.
    files = [p for p in ctx.store.root.rglob("*") if p.is_file()]
    assert len(files) == 1


def test_methods_catalog_lists_output_dampening(client):
    methods = client.get("/methods").json()["items"]
    dampening = next(m for m in methods if m["name"] == "output_dampening")
    assert dampening["supports_samples"] is False
    assert "alpha" in dampening["params_schema"]["properties"]
