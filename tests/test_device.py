"""Device-correct work. CPU tests: the binary (UINT8 / FP32 bytes) input path and the
device helpers. CUDA tests (marked ``cuda``, skipped without a GPU): every method, the
feature cache, training and ``/predict`` give on ``cuda`` what they give on the CPU,
within tolerance (a GPU sums in another order; training is not bit-reproducible)."""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from app.core.errors import InvalidInputError
from app.ml.device import resident, to_device
from app.architectures.catalog import build_model
from app.architectures.mnist_cnn import MNIST_SPEC
from app.prediction import inference_protocol as protocol
from app.prediction.service import forward_probabilities, image_shape

CPU = torch.device("cpu")
# The device compared with the CPU. UNLEARN_TEST_SECOND_DEVICE=cpu runs the CUDA tests'
# code CPU against CPU: a rehearsal of the tests themselves on a machine without a GPU.
SECOND = torch.device(os.environ.get("UNLEARN_TEST_SECOND_DEVICE", "cuda"))
HAS_SECOND = SECOND.type == "cpu" or torch.cuda.is_available()


def cuda(test):
    """Marks a CUDA test (``-m cuda`` selects them) and skips it without a GPU."""
    return pytest.mark.cuda(pytest.mark.skipif(not HAS_SECOND, reason="needs a CUDA GPU")(test))


@pytest.fixture(autouse=True)
def full_precision_on_cuda():
    """Compare like with like: cuDNN and matmuls may use TF32 on the GPU by default, which
    rounds to 10 mantissa bits; these tests check the device plumbing, not TF32."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture(scope="module")
def model(trained_state):
    network = build_model(MNIST_SPEC)
    network.load_state_dict(trained_state)
    return network.eval()


# -- CPU: the binary input path ---------------------------------------------------------

def _binary(inputs: list[dict], blob: bytes, **extra) -> tuple[bytes, str]:
    header = json.dumps({"inputs": inputs, **extra}).encode()
    return header + blob, str(len(header))


def test_uint8_pixels_give_the_float_answer(model, small_data):
    pixels = (small_data.test_images[:16].numpy() * 255).round().astype(np.uint8)
    as_uint8 = forward_probabilities(model, pixels, CPU)
    as_float = forward_probabilities(model, pixels.astype(np.float32) / 255.0, CPU)
    np.testing.assert_allclose(as_uint8, as_float, atol=1e-6)
    assert as_uint8.shape == (16, 10) and as_uint8.dtype == np.float32


def test_binary_uint8_and_fp32_requests_parse_to_the_same_batch(small_data):
    floats = small_data.test_images[:4].numpy()
    pixels = (floats * 255).round().astype(np.uint8)
    body, length = _binary([{"name": "image", "shape": [4, 1, 28, 28], "datatype": "UINT8",
                             "parameters": {"binary_data_size": pixels.nbytes}}],
                           pixels.tobytes())
    parsed = protocol.parse_request(body, length, image_shape(), limit=16)
    assert parsed.images.dtype == np.uint8 and parsed.images.shape == (4, 1, 28, 28)
    np.testing.assert_array_equal(parsed.images, pixels)
    assert parsed.images.flags.writeable

    little_endian = floats.astype("<f4")
    body, length = _binary([{"name": "image", "shape": [4, 784], "datatype": "FP32",
                             "parameters": {"binary_data_size": little_endian.nbytes}}],
                           little_endian.tobytes(), outputs=[{"name": "label"}])
    parsed = protocol.parse_request(body, length, image_shape(), limit=16)
    np.testing.assert_array_equal(parsed.images, floats)
    assert parsed.outputs == [("label", False)]


def test_binary_output_encoding_round_trips(small_data):
    pixels = np.zeros((2, 1, 28, 28), np.uint8)
    body, length = _binary([{"name": "image", "shape": [2, 1, 28, 28], "datatype": "UINT8",
                             "parameters": {"binary_data_size": pixels.nbytes}}],
                           pixels.tobytes(), parameters={"binary_data_output": True}, id="x")
    parsed = protocol.parse_request(body, length, image_shape(), limit=16)
    probabilities = np.array([[0.1] * 10, [0.0] * 9 + [1.0]], dtype=np.float32)
    content, header_length = protocol.encode_response("mnist-cnn", 3, parsed, probabilities)
    header = json.loads(content[:header_length])
    assert header["model_version"] == "3" and header["id"] == "x"
    rest = content[header_length:]
    assert np.frombuffer(rest[:80], "<f4").reshape(2, 10).tolist() == probabilities.tolist()
    assert np.frombuffer(rest[80:], "<i8").tolist() == [0, 9]


def test_binary_errors_name_the_field():
    pixels = bytes(784)
    cases = [
        (_binary([{"name": "image", "shape": [1, 784], "datatype": "UINT8",
                   "parameters": {"binary_data_size": 784}, "data": [0] * 784}], pixels),
         "inputs[0].data"),
        (_binary([{"name": "image", "shape": [1, 784], "datatype": "UINT8"}], pixels),
         "inputs[0].parameters"),
        (_binary([{"name": "image", "shape": [1, 784], "datatype": "FP32",
                   "parameters": {"binary_data_size": 784}}], pixels),
         "inputs[0].parameters.binary_data_size"),
        ((b'["not an object"]', "17"), "body"),
    ]
    for (body, length), field in cases:
        with pytest.raises(InvalidInputError) as error:
            protocol.parse_request(body, length, image_shape(), limit=16)
        assert error.value.field == field


def test_device_helpers_leave_cpu_tensors_alone():
    tensor = torch.arange(6)
    assert to_device(tensor, CPU) is tensor
    assert resident(tensor, CPU) is tensor


# -- CUDA: the same answers as on the CPU -------------------------------------------------

GPU = SECOND


def _forget(method_name: str, model, data, params: dict, device: torch.device,
            target=None):
    from app.unlearning.base import ForgetTarget
    from app.unlearning.catalog import get_method
    from app.unlearning.ssd import SelectiveSynapticDampening

    method = get_method(method_name)
    if method_name == "ssd":  # a fresh, cacheless instance: no importances reused across devices
        method = SelectiveSynapticDampening()
        method.cache = None
    working = copy.deepcopy(model).to(device)
    for parameter in working.parameters():
        parameter.requires_grad_(True)
    target = target or ForgetTarget(classes=(2,))
    result = method.forget(working, target, method.Params.model_validate(params), data,
                           lambda fraction: None)
    return result.eval()


def _probabilities(model, images: torch.Tensor, device: torch.device) -> np.ndarray:
    return forward_probabilities(model.to(device), images.numpy(), device)


@cuda
@pytest.mark.parametrize("method_name,params,tolerance", [
    ("output_dampening", {"alpha": 0.01}, 1e-5),
    ("ssd", {"batch_size": 256}, 2e-3),
    ("fisher", {"fisher_samples": 200, "seed": 0}, 2e-3),
])
def test_approximate_methods_match_cpu_on_cuda(model, small_data, method_name, params,
                                               tolerance):
    images = small_data.test_images[:500]
    on_cpu = _probabilities(_forget(method_name, model, small_data, params, CPU), images, CPU)
    on_gpu = _probabilities(_forget(method_name, model, small_data, params, GPU), images, CPU)
    assert np.abs(on_cpu - on_gpu).max() < tolerance
    assert (on_cpu.argmax(1) == on_gpu.argmax(1)).mean() >= 0.995


@cuda
def test_fisher_information_matches_cpu_on_cuda(model, small_data):
    from app.unlearning.fisher import diagonal_fisher

    images = small_data.train_images[:128]
    on_cpu = diagonal_fisher(copy.deepcopy(model), images)
    on_gpu = diagonal_fisher(copy.deepcopy(model).to(GPU), images)
    for name, value in on_cpu.items():
        torch.testing.assert_close(on_gpu[name].cpu(), value, rtol=1e-3, atol=1e-7)


@cuda
@pytest.mark.parametrize("method_name,params", [
    ("finetune", {"epochs": 1, "seed": 0}),
    ("retrain", {"epochs": 1, "seed": 0}),
])
def test_training_methods_reach_the_cpu_quality_on_cuda(model, small_data, method_name,
                                                        params):
    """Training is not bit-reproducible across devices; what must match is what it does:
    as much of the forgotten class recognised, and the others kept, as on the CPU."""
    images, labels = small_data.test_images, small_data.test_labels.numpy()
    results = {}
    for name, device in (("cpu", CPU), ("gpu", GPU)):
        predicted = _probabilities(_forget(method_name, model, small_data, params, device),
                                   images, CPU).argmax(1)
        results[name] = (float((predicted[labels == 2] == 2).mean()),
                         float((predicted[labels != 2] == labels[labels != 2]).mean()))
    (cpu_forget, cpu_retain), (gpu_forget, gpu_retain) = results["cpu"], results["gpu"]
    assert abs(cpu_forget - gpu_forget) <= 0.03
    assert abs(cpu_retain - gpu_retain) <= 0.02


@cuda
def test_sisa_forgets_on_cuda_as_on_cpu(small_data):
    from app.ml.sisa import SisaRecipe, train_sisa
    from app.unlearning.base import ForgetTarget

    data = small_data.subset(3000, 500, seed=1)
    recipe = SisaRecipe(shards=2, slices=2)
    labels = data.test_labels.numpy()
    accuracies = {}
    for name, device in (("cpu", CPU), ("gpu", GPU)):
        ensemble = train_sisa(data, recipe, device)
        forgotten = _forget("sisa", ensemble, data, {}, device,
                            ForgetTarget(sample_ids=tuple(data.train_ids[:50].tolist())))
        predicted = _probabilities(forgotten, data.test_images, CPU).argmax(1)
        accuracies[name] = float((predicted == labels).mean())
    assert abs(accuracies["cpu"] - accuracies["gpu"]) <= 0.03


@cuda
def test_features_and_accuracy_match_cpu_on_cuda(model, small_data):
    from app.evaluation.features import compute_features
    from app.ml.training import accuracy

    images = small_data.test_images
    torch.testing.assert_close(compute_features(model, images, GPU),
                               compute_features(model, images, CPU), rtol=1e-4, atol=1e-4)
    assert accuracy(model, images, small_data.test_labels, GPU) == pytest.approx(
        accuracy(model, images, small_data.test_labels, CPU), abs=1e-3)


@cuda
def test_predict_and_infer_on_cuda_match_cpu(tmp_path, feature_cache_dir, small_data,
                                             trained_state):
    from app.main import create_app
    from tests.conftest import authorized, make_ctx, make_settings

    images = small_data.test_images[:64]
    pixels = (images.numpy() * 255).round().astype(np.uint8)
    answers = {}
    for name, device in (("cpu", "cpu"), ("gpu", str(GPU))):
        settings = make_settings(tmp_path / name, f"sqlite:///{tmp_path / name}.db",
                                 feature_cache_dir, device=device)
        ctx = make_ctx(settings, small_data, trained_state)
        assert ctx.device.type == GPU.type if name == "gpu" else ctx.device.type == "cpu"
        with authorized(TestClient(create_app(ctx, start_worker=False)), ctx) as client:
            predicted = client.post("/predict", json={"instances": images[:, 0].tolist()})
            assert predicted.status_code == 200, predicted.text
            body, length = _binary([{"name": "image", "shape": [64, 1, 28, 28],
                                     "datatype": "UINT8",
                                     "parameters": {"binary_data_size": pixels.nbytes}}],
                                   pixels.tobytes())
            inferred = client.post("/v2/models/mnist-cnn/versions/1/infer", content=body,
                                   headers={protocol.HEADER_LENGTH: length})
            assert inferred.status_code == 200, inferred.text
        answers[name] = (
            np.array([p["probabilities"] for p in predicted.json()["predictions"]]),
            np.array(inferred.json()["outputs"][0]["data"]).reshape(64, 10),
        )
        ctx.close()
    for on_cpu, on_gpu in zip(answers["cpu"], answers["gpu"]):
        np.testing.assert_allclose(on_gpu, on_cpu, atol=1e-4)
