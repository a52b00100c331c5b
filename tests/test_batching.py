"""Dynamic batching: concurrent calls share forward passes, each gets exactly its own rows,
batches stay within their bound, and one caller's bad input or failure stays its own."""

from __future__ import annotations

import asyncio
import importlib
import threading

import httpx
import numpy as np
import pytest
import torch

from app.main import create_app
from app.architectures.catalog import build_model
from app.architectures.mnist_cnn import MNIST_SPEC
import app.prediction.predictor as predictor_module
from app.prediction.batching import DynamicBatcher
from app.prediction.service import forward_probabilities
from tests.conftest import ROOT, api_key, make_ctx, make_settings
from tests.test_console_browser import LiveServer

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model(trained_state):
    network = build_model(MNIST_SPEC)
    network.load_state_dict(trained_state)
    return network.eval()


def _forward(model, images):
    return forward_probabilities(model, images, CPU)


def _calls(small_data, sizes):
    """One image batch per caller, of the given sizes, from real test images."""
    images, start = [], 0
    for size in sizes:
        images.append(small_data.test_images[start:start + size].numpy())
        start += size
    return images


def test_concurrent_callers_get_exactly_their_own_results(model, small_data):
    sizes = [1, 3, 1, 7, 2, 1, 5, 1, 4, 1, 2, 6]
    calls = _calls(small_data, sizes)
    batcher = DynamicBatcher(_forward, max_batch_size=64, max_wait_s=0.05, history=100)

    async def run():
        return await asyncio.gather(*(batcher.submit("v1", model, c) for c in calls))

    results = asyncio.run(run())
    assert max(record.calls for record in batcher.history) > 1  # they did share passes
    assert sum(record.images for record in batcher.history) == sum(sizes)
    for images, result in zip(calls, results):
        assert result.shape == (len(images), 10)
        np.testing.assert_allclose(result, _forward(model, images), atol=1e-5)


def test_batches_never_exceed_the_bound_and_a_large_call_runs_alone(model, small_data):
    rng = np.random.default_rng(0)
    sizes = [int(s) for s in rng.integers(1, 6, size=40)] + [12]
    calls = _calls(small_data, sizes)
    batcher = DynamicBatcher(_forward, max_batch_size=8, max_wait_s=0.02, history=100)

    async def run():
        return await asyncio.gather(*(batcher.submit("v1", model, c) for c in calls))

    results = asyncio.run(run())
    records = list(batcher.history)
    assert sum(r.images for r in records) == sum(sizes)
    assert all(r.images <= 8 or r.calls == 1 for r in records), records
    assert any(r.images == 12 and r.calls == 1 for r in records)
    assert any(r.calls > 1 for r in records)
    for images, result in zip(calls, results):
        np.testing.assert_allclose(result, _forward(model, images), atol=1e-5)


def test_versions_are_batched_apart(small_data, trained_state, model):
    other = build_model(MNIST_SPEC).eval()  # untrained: different answers from the same images
    calls = _calls(small_data, [2, 2, 2, 2])
    batcher = DynamicBatcher(_forward, max_batch_size=64, max_wait_s=0.02, history=100)

    async def run():
        return await asyncio.gather(*(batcher.submit(key, net, c) for c, (key, net) in
                                      zip(calls, [("a", model), ("b", other)] * 2)))

    results = asyncio.run(run())
    for images, result, net in zip(calls, results, [model, other] * 2):
        np.testing.assert_allclose(result, _forward(net, images), atol=1e-5)


def test_a_bad_call_or_a_failed_pass_fails_only_its_own_callers(model, small_data):
    calls = _calls(small_data, [2, 2, 1, 3])
    poison = np.full((1, 1, 28, 28), -1.0, dtype=np.float32)

    def forward(net, images):
        if (images < 0).any():
            raise RuntimeError("device error")
        return _forward(net, images)

    batcher = DynamicBatcher(forward, max_batch_size=4, max_wait_s=0.02, history=100)

    async def run():
        wrong_shape = batcher.submit("v1", model, np.zeros((1, 1, 27, 28), np.float32))
        first = [batcher.submit("v1", model, c) for c in calls[:2]]  # 4 images: a full batch
        failing = batcher.submit("v1", model, poison)  # starts the next batch...
        later = [batcher.submit("v1", model, c) for c in calls[2:]]  # ...calls[2] joins it
        return await asyncio.gather(*first, wrong_shape, failing, *later,
                                    return_exceptions=True)

    async def run_in_order():
        # Let the shape be fixed by a good call first, so the bad one is refused on arrival.
        await batcher.submit("v1", model, calls[0])
        return await run()

    results = asyncio.run(run_in_order())
    first_a, first_b, wrong, failed, later_a, later_b = results
    assert isinstance(wrong, ValueError)
    assert isinstance(failed, RuntimeError)
    np.testing.assert_allclose(first_a, _forward(model, calls[0]), atol=1e-5)
    np.testing.assert_allclose(first_b, _forward(model, calls[1]), atol=1e-5)
    # calls[2] shared the failed pass; calls[3] (3 images) did not fit it and succeeded.
    assert isinstance(later_a, RuntimeError)
    np.testing.assert_allclose(later_b, _forward(model, calls[3]), atol=1e-5)


@pytest.fixture
def batching_server(tmp_path, feature_cache_dir, small_data, trained_state):
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'b.db'}", feature_cache_dir,
                             predict_batch_max_wait_ms=50, predict_batch_max_size=16)
    ctx = make_ctx(settings, small_data, trained_state)
    app = create_app(ctx, start_worker=False)
    with LiveServer(app) as server:
        server.app = app
        server.headers = {"Authorization": f"Bearer {api_key(ctx)}"}
        yield server
    ctx.close()


def test_concurrent_http_clients_share_passes_and_bad_input_stays_theirs(
        batching_server, model, small_data):
    images = small_data.test_images[:24].numpy()
    expected = _forward(model, images)
    bad = np.full((28, 28), 2.0).tolist()

    async def run():
        async with httpx.AsyncClient(base_url=batching_server.url,
                                     headers=batching_server.headers, timeout=30) as client:
            good = [client.post("/predict", json={"instances": [images[i, 0].tolist()]})
                    for i in range(16)]
            infer = [client.post("/v2/models/mnist-cnn/versions/1/infer", json={
                "inputs": [{"name": "image", "shape": [1, 784], "datatype": "UINT8",
                            "data": (images[i] * 255).round().astype(int).ravel().tolist()}]})
                for i in range(16, 24)]
            wrong = client.post("/predict", json={"instances": [bad]})
            return await asyncio.gather(*good, *infer, wrong)

    responses = asyncio.run(run())
    *good, wrong = responses
    assert wrong.status_code == 422 and wrong.json()["error"]["field"] == "instances[0]"
    for i, response in enumerate(good[:16]):
        assert response.status_code == 200, response.text
        probabilities = response.json()["predictions"][0]["probabilities"]
        np.testing.assert_allclose(probabilities, expected[i], atol=1e-5)
    for i, response in enumerate(good[16:], start=16):
        assert response.status_code == 200, response.text
        outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
        pixels = (images[i:i + 1] * 255).round() / 255
        np.testing.assert_allclose(outputs["probabilities"],
                                   _forward(model, pixels.astype(np.float32))[0], atol=1e-5)
    history = list(batching_server.app.state.predictor.batcher.history)
    assert sum(r.images for r in history) == 24
    assert max(r.calls for r in history) > 1
    assert all(r.images <= 16 for r in history)


def test_the_concurrency_benchmark_measures_the_batcher_its_server_uses(
        tmp_path, feature_cache_dir, small_data, trained_state, model, monkeypatch):
    """benchmarks/predict_concurrency.py once served fresh apps instead of its own (the
    app went into ``serve``'s ``start_worker`` place), so it read the statistics of a
    batcher no request reached ("median 0 images per pass"). Servers started the way the
    benchmark starts them must route concurrent single-image calls through the batcher
    it reports on, and only the batched one may batch."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    predict_concurrency = importlib.import_module("predict_concurrency")
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'c.db'}", feature_cache_dir)
    ctx = make_ctx(settings, small_data, trained_state)
    headers = {"Authorization": f"Bearer {api_key(ctx)}"}
    images = small_data.test_images[:16].numpy()
    expected = _forward(model, images)

    async def sixteen_clients(url):
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
            return await asyncio.gather(*(
                client.post("/predict", json={"instances": [images[i, 0].tolist()]})
                for i in range(16)))

    # Every forward pass, batched or not, runs on the process's one forward thread (on a
    # CPU, passes on several threads fight for the cores, each with its own OpenMP team).
    forward_threads: set[str] = set()
    original_forward = predictor_module.forward_probabilities

    def recording_forward(*args, **kwargs):
        forward_threads.add(threading.current_thread().name)
        return original_forward(*args, **kwargs)

    monkeypatch.setattr(predictor_module, "forward_probabilities", recording_forward)
    # A long wait and a bound of 8: the 16 concurrent calls are sure to find company.
    batching = {"predict_batch_max_size": 8, "predict_batch_max_wait_ms": 2000}
    try:
        with predict_concurrency.served_apps(ctx, batching) as served:
            answers = {name: asyncio.run(sixteen_clients(url))
                       for name, (url, _) in served.items()}
    finally:
        ctx.close()
    for responses in answers.values():
        for i, response in enumerate(responses):
            assert response.status_code == 200, response.text
            np.testing.assert_allclose(response.json()["predictions"][0]["probabilities"],
                                       expected[i], atol=1e-5)
    batcher = served["batched"][1].state.predictor.batcher
    assert (batcher.calls, batcher.images) == (16, 16)
    assert batcher.passes < 16  # calls shared forward passes
    assert all(record.images <= 8 for record in batcher.history)
    assert served["unbatched"][1].state.predictor.batcher is None
    assert len(forward_threads) == 1 and forward_threads.pop().startswith("unlearn-forward")
