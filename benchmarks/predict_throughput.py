"""/predict throughput against the raw model's forward pass, measured in the same process.

Serves the shipped base model under uvicorn on 127.0.0.1 (in a thread of this process),
posts 256-image batches of real test images as JSON, and compares images/second with
the bare ``model(x)`` forward on the same batch. Also reports single-image latency.

    UNLEARN_DATA_DIR=../shared/data .venv/bin/python benchmarks/predict_throughput.py
"""

from __future__ import annotations

import argparse
import base64
import io
import statistics
import time

import httpx
import numpy as np
import orjson
import torch
from PIL import Image
from _common import admin_headers, base_version, fresh_context, percentile, serve, write_result



def _png(image: torch.Tensor) -> str:
    buffer = io.BytesIO()
    Image.fromarray((image.numpy() * 255).round().astype(np.uint8), mode="L").save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()

    ctx = fresh_context()
    data = ctx.model_data(ctx.model_name)
    model = ctx.models.get(base_version(ctx))
    images = data.test_images[: args.batch]
    # Pixel values as a client would send them: 8-bit grey levels scaled to [0, 1].
    payload = orjson.dumps({"instances": [[[round(v, 4) for v in row] for row in image[0].tolist()]
                                          for image in images]})

    png_payload = orjson.dumps({"images": [_png(image[0]) for image in images]})
    single = orjson.dumps({"instances": [images[0, 0].tolist()]})
    headers = {"content-type": "application/json", **admin_headers(ctx)}
    raw_times, served_times, png_times, latencies = [], [], [], []
    with serve(ctx) as url, httpx.Client(base_url=url, timeout=60) as client:
        for _ in range(3):  # warm-up
            assert client.post("/predict", content=payload, headers=headers).status_code == 200
        # Alternate the two measurements so that load from elsewhere on a shared machine
        # hits both alike; compare medians.
        for _ in range(args.rounds):
            started = time.perf_counter()
            with torch.inference_mode():
                model(images)
            raw_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            response = client.post("/predict", content=payload, headers=headers)
            served_times.append(time.perf_counter() - started)
            assert len(response.json()["predictions"]) == args.batch
            started = time.perf_counter()
            response = client.post("/predict", content=png_payload, headers=headers)
            png_times.append(time.perf_counter() - started)
            assert len(response.json()["predictions"]) == args.batch
        for _ in range(200):
            started = time.perf_counter()
            client.post("/predict", content=single, headers=headers)
            latencies.append(time.perf_counter() - started)
    raw = args.batch / statistics.median(raw_times)
    served = args.batch / statistics.median(served_times)
    served_png = args.batch / statistics.median(png_times)

    report = "\n".join([
        f"/predict with {args.batch}-image JSON batches vs the raw forward pass (same process):",
        f"- raw model forward: {raw:,.0f} images/s",
        f"- /predict through uvicorn on loopback: {served:,.0f} images/s "
        f"({served / raw:.0%} of raw)",
        f"- the same images as base64 PNGs (`images`): {served_png:,.0f} images/s "
        f"({served_png / raw:.0%} of raw)",
        f"- single-image /predict latency: p50 {statistics.median(latencies) * 1000:.1f} ms, "
        f"p90 {percentile(latencies, 90) * 1000:.1f} ms",
    ])
    print(report)
    write_result("predict_throughput.md", report)
    ctx.close()


if __name__ == "__main__":
    main()
