"""Prediction throughput through HTTP against the raw model's forward pass, in one process,
on the configured device (UNLEARN_DEVICE; every figure names it).

Serves the shipped base model under uvicorn on 127.0.0.1 (in a thread of this process) and
sends the same 256 real test images each round as
  * the Open Inference Protocol's binary data extension, UINT8 pixels, binary output
    (``POST /v2/models/mnist-cnn/versions/1/infer``; the binary input of the API),
  * the same call from the standard library's http.client (a lighter client than httpx),
  * the same binary UINT8 input with a JSON answer,
  * ``/predict`` JSON ``instances`` and base64 PNG ``images``,
and compares images/second with the raw forward pass (``model(x)`` on a batch already on
the device, synchronised, timed on the thread that runs the service's forward passes):
the strictest baseline. It also times the in-process path
without HTTP (host UINT8 -> device -> probabilities on the host). Rounds alternate the
measurements so that load from elsewhere hits all alike; medians are compared.

The ratio to the raw pass moves with the machine's speed from run to run (the same
service measured 84% with a raw pass of ~8,800 images/s and 89-92% with ~5,000), so the
binary call is also measured paired: its round trip against the server's own forward pass
for that same call (timed inside the server's forward thread), which gives the time a
call costs besides its pass, in ms, independent of the raw baseline.

    UNLEARN_DATA_DIR=../shared/data .venv/bin/python benchmarks/predict_throughput.py
    UNLEARN_DEVICE=cuda ... benchmarks/predict_throughput.py --rounds 50
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import statistics
import time
import urllib.parse

import httpx
import numpy as np
import orjson
import torch
from PIL import Image
from _common import (admin_headers, base_version, fresh_context, percentile, serve,
                     write_result)

import app.prediction.predictor as predictor_module
from app.ml.device import describe_device
from app.prediction.predictor import forward_thread
from app.prediction.service import forward_probabilities

HEADER = "Inference-Header-Content-Length"


def _png(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def binary_infer_body(pixels: np.ndarray, binary_output: bool) -> tuple[bytes, dict]:
    """A binary-extension request as tritonclient writes it: JSON header, then the bytes."""
    header = {"inputs": [{"name": "image", "shape": list(pixels.shape), "datatype": "UINT8",
                          "parameters": {"binary_data_size": pixels.nbytes}}]}
    if binary_output:
        header["parameters"] = {"binary_data_output": True}
    encoded = json.dumps(header).encode()
    return encoded + pixels.tobytes(), {HEADER: str(len(encoded)),
                                        "content-type": "application/octet-stream"}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--single", type=int, default=200, help="single-image requests")
    parser.add_argument("--result", default="predict_throughput.md")
    args = parser.parse_args()

    # Every forward pass the server runs (the batcher's too) is timed where it runs.
    served_passes: list[float] = []
    served_forward = predictor_module.forward_probabilities

    def timed_served_forward(*forward_args):
        started = time.perf_counter()
        try:
            return served_forward(*forward_args)
        finally:
            served_passes.append(time.perf_counter() - started)

    predictor_module.forward_probabilities = timed_served_forward
    ctx = fresh_context()
    device = ctx.device
    data = ctx.model_data(ctx.model_name)
    model = ctx.models.get(base_version(ctx))
    # Pixels as clients hold them: 8-bit grey levels (MNIST's own), [N, 1, 28, 28].
    pixels = (data.test_images[: args.batch].numpy() * 255).round().astype(np.uint8)
    floats = pixels.astype(np.float32) / 255.0
    on_device = torch.from_numpy(floats).to(device)

    binary_body, binary_headers = binary_infer_body(pixels, binary_output=True)
    binary_json_body, binary_json_headers = binary_infer_body(pixels, binary_output=False)
    json_body = orjson.dumps({"instances": [[[round(v, 4) for v in row] for row in image[0]]
                                            for image in floats.tolist()]})
    png_body = orjson.dumps({"images": [_png(image[0]) for image in pixels]})
    single = orjson.dumps({"instances": [floats[0, 0].tolist()]})
    auth = admin_headers(ctx)
    json_headers = {"content-type": "application/json", **auth}
    infer = "/v2/models/mnist-cnn/versions/1/infer"

    # The raw and in-process passes run on the thread that runs the service's forward
    # passes, timed inside it: the same thread (so the same OpenMP team on a CPU) and no
    # thread hop counted against the baseline.
    runner = forward_thread()

    def on_forward_thread(function):
        def timed():
            started = time.perf_counter()
            function()
            return time.perf_counter() - started
        return lambda: runner.submit(timed).result()

    @on_forward_thread
    def raw_forward():
        with torch.inference_mode():
            model(on_device)
        _synchronize(device)

    @on_forward_thread
    def in_process():
        forward_probabilities(model, pixels, device)

    with serve(ctx) as url, httpx.Client(base_url=url, timeout=60) as client:
        def post_binary():
            response = client.post(infer, content=binary_body, headers={**binary_headers, **auth})
            assert response.status_code == 200, response.text
            length = int(response.headers[HEADER])
            assert len(response.content) == length + args.batch * (10 * 4 + 8)

        # The same call from the standard library's http.client (one kept-alive
        # connection): how much of the gap to the raw pass is httpx's own work.
        stdlib = http.client.HTTPConnection("127.0.0.1", urllib.parse.urlsplit(url).port)
        stdlib_headers = {**binary_headers, **auth}

        def post_binary_stdlib():
            stdlib.request("POST", infer, body=binary_body, headers=stdlib_headers)
            response = stdlib.getresponse()
            content = response.read()
            assert response.status == 200, content
            assert len(content) == int(response.headers[HEADER]) + args.batch * (10 * 4 + 8)

        def post_binary_json():
            response = client.post(infer, content=binary_json_body,
                                   headers={**binary_json_headers, **auth})
            assert response.status_code == 200, response.text
            assert response.json()["outputs"][0]["shape"] == [args.batch, 10]

        def post_json():
            response = client.post("/predict", content=json_body, headers=json_headers)
            assert len(response.json()["predictions"]) == args.batch

        def post_png():
            response = client.post("/predict", content=png_body, headers=json_headers)
            assert len(response.json()["predictions"]) == args.batch

        steps = {"raw": raw_forward, "in_process": in_process, "binary": post_binary,
                 "binary_stdlib": post_binary_stdlib, "binary_json": post_binary_json, "json": post_json, "png": post_png}
        for step in steps.values():  # warm-up (CUDA context, cuDNN choices, caches)
            for _ in range(3):
                step()
        times: dict[str, list[float]] = {name: [] for name in steps}
        besides_pass: list[float] = []  # binary calls: round trip minus the server's pass
        pass_shares: list[float] = []
        for _ in range(args.rounds):
            for name, step in steps.items():
                served_passes.clear()
                started = time.perf_counter()
                inner = step()  # the time measured inside the forward thread, if any
                times[name].append(inner if inner is not None else
                                   time.perf_counter() - started)
                if name == "binary":
                    assert len(served_passes) == 1, served_passes
                    besides_pass.append(times[name][-1] - served_passes[0])
                    pass_shares.append(served_passes[0] / times[name][-1])
        latencies = []
        for _ in range(args.single):
            started = time.perf_counter()
            assert client.post("/predict", content=single, headers=json_headers).status_code == 200
            latencies.append(time.perf_counter() - started)
        stdlib.close()
    rate = {name: args.batch / statistics.median(values) for name, values in times.items()}
    raw = rate["raw"]

    def line(label: str, name: str) -> str:
        return f"- {label}: {rate[name]:,.0f} images/s ({rate[name] / raw:.0%} of raw)"

    report = "\n".join([
        f"Predictions in {args.batch}-image batches vs the raw forward pass, same process, "
        f"device: {describe_device(device)}; median of {args.rounds} interleaved rounds:",
        f"- raw model forward (input already on the device): {raw:,.0f} images/s",
        line("in process, no HTTP (host UINT8 -> device -> host probabilities)", "in_process"),
        line("v2 infer, binary UINT8 input, binary output (uvicorn, loopback)", "binary"),
        f"- the same call, paired with the server's own forward pass for it: "
        f"{statistics.median(besides_pass) * 1000:.2f} ms a call besides the pass "
        f"(median; quartiles {percentile(besides_pass, 25) * 1000:.2f}-"
        f"{percentile(besides_pass, 75) * 1000:.2f} ms), the pass "
        f"{statistics.median(pass_shares):.1%} of the round trip",
        line("the same from the standard library's http.client instead of httpx",
             "binary_stdlib"),
        line("v2 infer, binary UINT8 input, JSON output", "binary_json"),
        line("/predict, JSON instances", "json"),
        line("/predict, base64 PNG images", "png"),
        f"- single-image /predict latency: p50 {statistics.median(latencies) * 1000:.1f} ms, "
        f"p90 {percentile(latencies, 90) * 1000:.1f} ms",
    ])
    print(report)
    write_result(args.result, report)
    ctx.close()


if __name__ == "__main__":
    main()
