"""The Open Inference Protocol (KServe v2) routes, with bodies as KServe/Triton clients
write them: JSON tensors, and Triton's binary data extension (tritonclient builds those
bodies here when it is installed; the hand-built ones below follow the same layout)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

HEADER = "Inference-Header-Content-Length"
INFER = "/v2/models/mnist-cnn/versions/1/infer"


def _expected(ctx, images: np.ndarray) -> np.ndarray:
    """Probabilities from the version's model called directly, without the service."""
    from app.registry.service import get_version

    with ctx.db.session() as session:
        model = ctx.models.get(get_version(session, ctx.model_name, 1))
    with torch.inference_mode():
        x = torch.from_numpy(images.reshape(-1, 1, 28, 28).astype(np.float32))
        return torch.softmax(model(x), dim=1).numpy()


def _binary_body(header: dict, *blobs: bytes) -> tuple[bytes, dict]:
    encoded = json.dumps(header).encode()
    return encoded + b"".join(blobs), {HEADER: str(len(encoded))}


def _split_response(response) -> tuple[dict, bytes]:
    length = response.headers.get(HEADER)
    if length is None:
        return response.json(), b""
    return json.loads(response.content[: int(length)]), response.content[int(length):]


def test_health_and_metadata(client):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    # Probes carry no key.
    client.headers.pop("Authorization")
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/models/mnist-cnn").status_code == 401


def test_model_and_version_metadata(client):
    model = client.get("/v2/models/mnist-cnn").json()
    assert model["name"] == "mnist-cnn" and model["versions"] == ["1"]
    assert model["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
    assert {o["name"]: o["shape"] for o in model["outputs"]} == {
        "probabilities": [-1, 10], "label": [-1]}
    assert client.get("/v2/models/mnist-cnn/versions/1").json()["versions"] == ["1"]
    assert client.get("/v2/models/mnist-cnn/ready").json() == {"ready": True}
    assert client.get("/v2/models/mnist-cnn/versions/1/ready").json() == {"ready": True}
    for path, field in (("/v2/models/other", "name"),
                        ("/v2/models/mnist-cnn/versions/9", "version"),
                        ("/v2/models/mnist-cnn/versions/x", "version")):
        response = client.get(path)
        assert response.status_code == 404 and response.json()["error"]["field"] == field


def test_json_fp32_infer_as_kserve_clients_send_it(client, ctx, small_data):
    images = small_data.test_images[:5, 0].numpy()
    body = {"id": "req-7", "inputs": [{"name": "image", "shape": [5, 1, 28, 28],
                                        "datatype": "FP32",
                                        "data": images.reshape(-1).tolist()}]}
    response = client.post("/v2/models/mnist-cnn/infer", json=body)  # production version
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    answer = response.json()
    assert answer["model_name"] == "mnist-cnn" and answer["model_version"] == "1"
    assert answer["id"] == "req-7"
    outputs = {o["name"]: o for o in answer["outputs"]}
    probabilities = np.asarray(outputs["probabilities"]["data"]).reshape(5, 10)
    assert outputs["probabilities"]["shape"] == [5, 10]
    assert outputs["probabilities"]["datatype"] == "FP32"
    np.testing.assert_allclose(probabilities, _expected(ctx, images), atol=1e-5)
    assert outputs["label"]["data"] == probabilities.argmax(axis=1).tolist()
    assert outputs["label"]["datatype"] == "INT64"
    # Nested data and the [N, H, W] layout are read the same way.
    nested = {"inputs": [{"name": "image", "shape": [5, 28, 28], "datatype": "FP32",
                          "data": images.tolist()}],
              "outputs": [{"name": "label"}]}
    answer = client.post(INFER, json=nested).json()
    assert [o["name"] for o in answer["outputs"]] == ["label"]
    assert answer["outputs"][0]["data"] == outputs["label"]["data"]


def test_binary_uint8_input_with_binary_output(client, ctx, small_data):
    pixels = (small_data.test_images[:8, 0].numpy() * 255).round().astype(np.uint8)
    header = {"inputs": [{"name": "image", "shape": [8, 784], "datatype": "UINT8",
                          "parameters": {"binary_data_size": pixels.nbytes}}],
              "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}},
                          {"name": "label", "parameters": {"binary_data": False}}]}
    content, headers = _binary_body(header, pixels.tobytes())
    response = client.post(INFER, content=content, headers=headers)
    assert response.status_code == 200, response.text
    answer, rest = _split_response(response)
    probabilities_out, label_out = answer["outputs"]
    assert probabilities_out["parameters"]["binary_data_size"] == 8 * 10 * 4 == len(rest)
    probabilities = np.frombuffer(rest, dtype="<f4").reshape(8, 10)
    np.testing.assert_allclose(probabilities, _expected(ctx, pixels / 255.0), atol=1e-5)
    assert label_out["data"] == probabilities.argmax(axis=1).tolist()


def test_binary_fp32_input_with_binary_data_output(client, ctx, small_data):
    images = small_data.test_images[:3].numpy()
    header = {"inputs": [{"name": "image", "shape": [3, 1, 28, 28], "datatype": "FP32",
                          "parameters": {"binary_data_size": images.nbytes}}],
              "parameters": {"binary_data_output": True}}
    content, headers = _binary_body(header, images.astype("<f4").tobytes())
    response = client.post(INFER, content=content, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    answer, rest = _split_response(response)
    sizes = [o["parameters"]["binary_data_size"] for o in answer["outputs"]]
    assert [o["name"] for o in answer["outputs"]] == ["probabilities", "label"]
    assert sizes == [3 * 10 * 4, 3 * 8]
    probabilities = np.frombuffer(rest[: sizes[0]], dtype="<f4").reshape(3, 10)
    labels = np.frombuffer(rest[sizes[0]:], dtype="<i8")
    np.testing.assert_allclose(probabilities, _expected(ctx, images), atol=1e-5)
    assert labels.tolist() == probabilities.argmax(axis=1).tolist()


def test_tritonclient_bodies_round_trip(client, ctx, small_data):
    http = pytest.importorskip("tritonclient.http")
    pixels = (small_data.test_images[:4].numpy() * 255).round().astype(np.uint8)
    image = http.InferInput("image", list(pixels.shape), "UINT8")
    image.set_data_from_numpy(pixels, binary_data=True)
    outputs = [http.InferRequestedOutput("probabilities", binary_data=True),
               http.InferRequestedOutput("label", binary_data=False)]
    body, json_size = http.InferenceServerClient.generate_request_body(
        [image], outputs=outputs, request_id="triton-1")
    response = client.post(INFER, content=body, headers={HEADER: str(json_size)})
    assert response.status_code == 200, response.text
    result = http.InferenceServerClient.parse_response_body(
        response.content, header_length=int(response.headers[HEADER]))
    probabilities = result.as_numpy("probabilities")
    np.testing.assert_allclose(probabilities, _expected(ctx, pixels / 255.0), atol=1e-5)
    assert result.as_numpy("label").tolist() == probabilities.argmax(axis=1).tolist()
    assert result.get_response()["id"] == "triton-1"

    # No outputs named: tritonclient asks for every output in binary.
    image = http.InferInput("image", [4, 1, 28, 28], "FP32")
    image.set_data_from_numpy((pixels / 255.0).astype(np.float32), binary_data=False)
    body, json_size = http.InferenceServerClient.generate_request_body([image])
    headers = {HEADER: str(json_size)} if json_size is not None else {}
    response = client.post(INFER, content=body, headers=headers)
    assert response.status_code == 200, response.text
    result = http.InferenceServerClient.parse_response_body(
        response.content, header_length=int(response.headers[HEADER]))
    np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, atol=1e-5)


def _error(response):
    return response.status_code, response.json()["error"]["field"]


def test_bad_inference_requests_get_4xx_naming_the_field(client, ctx):
    image = {"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32",
             "data": [0.0] * 784}
    cases = [
        ({"inputs": []}, "inputs"),
        ({"inputs": [image | {"name": "pixels"}]}, "inputs[0].name"),
        ({"inputs": [image | {"datatype": "FP64"}]}, "inputs[0].datatype"),
        ({"inputs": [image | {"shape": [1, 27, 28]}]}, "inputs[0].shape"),
        ({"inputs": [image | {"shape": [0, 1, 28, 28], "data": []}]}, "inputs[0].shape"),
        ({"inputs": [image | {"data": [0.0] * 783}]}, "inputs[0].data"),
        ({"inputs": [image | {"data": [2.0] * 784}]}, "inputs[0].data"),
        ({"inputs": [image | {"data": ["x"] * 784}]}, "inputs[0].data"),
        ({"inputs": [image | {"datatype": "UINT8", "data": [256] * 784}]}, "inputs[0].data"),
        ({"inputs": [{k: v for k, v in image.items() if k != "data"}]}, "inputs[0].data"),
        ({"inputs": [image], "outputs": [{"name": "logits"}]}, "outputs[0].name"),
        ({"inputs": [image], "surprise": 1}, "surprise"),
    ]
    for body, field in cases:
        assert _error(client.post(INFER, json=body)) == (422, field), body
    assert _error(client.post(INFER, content=b"{not json")) == (422, "body")
    limit = ctx.settings.max_predict_batch
    too_many = image | {"shape": [limit + 1, 784], "datatype": "UINT8",
                        "parameters": {"binary_data_size": (limit + 1) * 784}}
    content, headers = _binary_body({"inputs": [too_many]}, bytes((limit + 1) * 784))
    assert _error(client.post(INFER, content=content, headers=headers)) == \
        (413, "inputs[0].shape")

    binary = {"name": "image", "shape": [2, 784], "datatype": "UINT8",
              "parameters": {"binary_data_size": 1568}}
    content, headers = _binary_body({"inputs": [binary]}, bytes(1567))  # one byte short
    assert _error(client.post(INFER, content=content, headers=headers)) == \
        (422, HEADER)
    wrong_size = binary | {"parameters": {"binary_data_size": 1000}}
    content, headers = _binary_body({"inputs": [wrong_size]}, bytes(1000))
    assert _error(client.post(INFER, content=content, headers=headers)) == \
        (422, "inputs[0].parameters.binary_data_size")
    for length in ("abc", "0", "999999"):
        response = client.post(INFER, content=content, headers={HEADER: length})
        assert _error(response) == (422, HEADER)
    nan = np.full(784, np.nan, dtype="<f4")
    content, headers = _binary_body({"inputs": [{
        "name": "image", "shape": [1, 784], "datatype": "FP32",
        "parameters": {"binary_data_size": nan.nbytes}}]}, nan.tobytes())
    assert _error(client.post(INFER, content=content, headers=headers)) == \
        (422, "inputs[0].data")
    assert _error(client.post("/v2/models/other/infer", json={"inputs": [image]})) == \
        (404, "name")
    assert _error(client.post("/v2/models/mnist-cnn/versions/5/infer",
                              json={"inputs": [image]})) == (404, "version")


def test_infer_checks_the_key_before_anything_the_answer_could_reveal(client, ctx):
    """The infer routes check the key inside their own thread hop (``require_in_route``):
    still first, so a missing, wrong or revoked key gets 401 and a key without the client
    role 403, the same answer whether the model, the version and the body exist or not."""
    from app.auth.service import revoke_key
    from tests.conftest import api_key

    good = {"inputs": [{"name": "image", "shape": [1, 784], "datatype": "FP32",
                        "data": [0.0] * 784}]}
    targets = [(INFER, good), ("/v2/models/mnist-cnn/infer", good),
               ("/v2/models/no-such-model/infer", good),
               ("/v2/models/mnist-cnn/versions/999/infer", good),
               ("/v2/models/mnist-cnn/versions/abc/infer", good),
               (INFER, {"inputs": []})]
    revoked = api_key(ctx, "client", name="revoked-client")
    with ctx.db.session() as session:
        revoke_key(session, "revoked-client", revoked_by="test")
    callers = [({}, 401), ({"Authorization": "Bearer ulk_" + "x" * 43}, 401),
               ({"Authorization": f"Bearer {revoked}"}, 401),
               ({"Authorization": f"Bearer {api_key(ctx, 'auditor')}"}, 403),
               ({"Authorization": f"Bearer {api_key(ctx, 'privacy_officer')}"}, 403)]
    client.headers.pop("Authorization")
    for headers, status in callers:
        answers = [client.post(path, json=body, headers=headers) for path, body in targets]
        assert {a.status_code for a in answers} == {status}, [a.text for a in answers]
        assert len({a.json()["error"]["message"] for a in answers}) == 1
    # And a client key gets past the check to the answers that do depend on the target.
    headers = {"Authorization": f"Bearer {api_key(ctx, 'client')}"}
    assert [client.post(path, json=body, headers=headers).status_code
            for path, body in targets] == [200, 200, 404, 404, 404, 422]
