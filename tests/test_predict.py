"""Predictions from any version, and the predict endpoint's input checks."""

import base64
import io

import numpy as np
from PIL import Image


def _png(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray((array * 255).astype(np.uint8), mode="L").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_predicts_real_digits_from_default_and_named_versions(client, small_data):
    images = small_data.test_images[:32, 0].numpy()
    labels = small_data.test_labels[:32].tolist()
    response = client.post("/predict", json={"instances": images.tolist()})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == 1
    predictions = body["predictions"]
    assert len(predictions) == 32
    for prediction in predictions:
        assert len(prediction["probabilities"]) == 10
        assert abs(sum(prediction["probabilities"]) - 1) < 1e-4
        assert prediction["label"] == int(np.argmax(prediction["probabilities"]))
    correct = sum(p["label"] == y for p, y in zip(predictions, labels))
    assert correct >= 28  # the small test model is ~97% accurate

    # The same images as PNGs give the same answers (up to 8-bit quantisation).
    pngs = [_png(image) for image in images]
    as_png = client.post("/predict", json={"images": pngs, "model_version": 1}).json()
    agree = sum(a["label"] == b["label"] for a, b in zip(predictions, as_png["predictions"]))
    assert agree >= 31


def test_forgotten_class_disappears_from_the_new_version(client, small_data):
    forgotten = client.post("/forget-requests?wait=true", json={
        "classes": [2], "method": "output_dampening", "params": {"alpha": 0.01},
        "requested_by": "dpo", "subject_reference": "case-1"}).json()
    twos = small_data.test_images[small_data.test_labels == 2][:50, 0].numpy().tolist()
    old = client.post("/predict", json={"instances": twos, "model_version": 1}).json()
    new = client.post("/predict", json={"instances": twos,
                                        "model_version": forgotten["result_version"]}).json()
    assert new["model_version"] == forgotten["result_version"]
    assert sum(p["label"] == 2 for p in old["predictions"]) >= 45
    assert sum(p["label"] == 2 for p in new["predictions"]) <= 2


def _error(response):
    return response.status_code, response.json()["error"].get("field")


def test_bad_instances_are_rejected_with_the_field(client):
    good = np.zeros((28, 28)).tolist()
    wrong_shape = np.zeros((28, 27)).tolist()
    out_of_range = (np.ones((28, 28)) * 2).tolist()
    assert _error(client.post("/predict", json={"instances": [good, wrong_shape]})) == \
        (422, "instances[1]")
    assert _error(client.post("/predict", json={"instances": [out_of_range]})) == \
        (422, "instances[0]")
    assert _error(client.post("/predict", json={"instances": []})) == (422, "instances")
    assert client.post("/predict", json={}).status_code == 422
    assert client.post("/predict", json={"instances": [good], "images": ["x"]}).status_code == 422
    assert _error(client.post("/predict", json={"instances": [good], "model_version": 42})) == \
        (404, "model_version")
    nan_body = '{"instances": [[' + ",".join(["[" + ",".join(["NaN"] * 28) + "]"] * 28)[1:-1] + ']]]}'
    response = client.post("/predict", content=nan_body, headers={"content-type": "application/json"})
    assert response.status_code == 422


def test_oversize_batch_is_413(client, ctx):
    limit = ctx.settings.max_predict_batch
    image = np.zeros((28, 28)).tolist()
    response = client.post("/predict", json={"instances": [image] * (limit + 1)})
    assert response.status_code == 413
    assert response.json()["error"]["field"] == "instances"


def test_bad_pngs_are_rejected(client):
    assert _error(client.post("/predict", json={"images": ["not base64!"]})) == (422, "images[0]")
    not_png = base64.b64encode(b"hello world").decode()
    assert _error(client.post("/predict", json={"images": [not_png]})) == (422, "images[0]")
    big = _png(np.zeros((32, 32)))
    assert _error(client.post("/predict", json={"images": [big]})) == (422, "images[0]")
