"""End-to-end latency of a class forget request through the HTTP API, against retraining.

Starts the service under uvicorn on 127.0.0.1 (SQLite, shipped base model, full MNIST),
files class forget requests with ``?wait=true`` (each returns after the new version is
published with full before/after metrics over all 70,000 images), and times them once the
penultimate features are cached. Then retrains the base model from scratch on the retain
set with the same recipe on the same device (UNLEARN_DEVICE), in the same process, and
prints the ratio. Every figure names the device.

    UNLEARN_DATA_DIR=../shared/data .venv/bin/python benchmarks/forget_latency.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import httpx
from _common import admin_headers, fresh_context, percentile, serve, write_result

from app.evaluation.service import named_set_masks
from app.ml.device import describe_device
from app.ml.training import TrainingRecipe, train_model
from app.unlearning.base import ForgetTarget


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--skip-retrain", action="store_true")
    parser.add_argument("--result", default="forget_latency.md")
    args = parser.parse_args()

    ctx = fresh_context()
    data = ctx.data.get()
    body = {"classes": [2], "method": "output_dampening", "params": {"alpha": 0.01},
            "requested_by": "benchmark", "subject_reference": "BENCH"}
    latencies, server_durations = [], []
    headers = admin_headers(ctx)  # before serving, so no bootstrap key is printed
    with serve(ctx) as url, httpx.Client(base_url=url, timeout=120, headers=headers) as client:
        first = client.post("/forget-requests?wait=true", json=body).json()  # warms caches
        assert first["status"] == "completed", first
        for i in range(args.requests):
            started = time.perf_counter()
            response = client.post("/forget-requests?wait=true",
                                   json=body | {"classes": [i % 10]})
            latencies.append(time.perf_counter() - started)
            result = response.json()
            assert result["status"] == "completed", result
            assert result["metrics"]["after"]["retain"]["count"] > 0
            server_durations.append(result["duration_s"])
    median = statistics.median(latencies)
    lines = [
        f"Class forget request through the API (output dampening, full before/after metrics "
        f"over {data.num_train + len(data.test_labels):,} images, features cached), "
        f"{args.requests} requests, device: {describe_device(ctx.device)}:",
        f"- median {median * 1000:.0f} ms, p90 {percentile(latencies, 90) * 1000:.0f} ms, "
        f"max {max(latencies) * 1000:.0f} ms end to end",
        f"- of which claimed-to-finished in the worker (the request's duration_s): median "
        f"{statistics.median(server_durations) * 1000:.0f} ms",
    ]
    if not args.skip_retrain:
        retain = ~named_set_masks(data, ForgetTarget(classes=(2,)))["forget"]
        started = time.perf_counter()
        train_model(data.train_images[retain], data.train_labels[retain], TrainingRecipe(),
                    device=ctx.device)
        retrain = time.perf_counter() - started
        lines += [
            f"- retraining from scratch on the retain set ({int(retain.sum())} images, "
            f"base recipe, same device): {retrain:.1f} s",
            f"- speed-up of a forget request over retraining: {retrain / median:.0f}x",
        ]
    report = "\n".join(lines)
    print(report)
    write_result(args.result, report)
    ctx.close()


if __name__ == "__main__":
    main()
