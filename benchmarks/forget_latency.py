"""End-to-end latency of a class forget request through the HTTP API, against retraining.

Starts the service under uvicorn on 127.0.0.1 (SQLite, shipped base model, full MNIST),
files class forget requests with ``?wait=true`` (each returns after the new version is
published with full before/after metrics over all 70,000 images), and times them once the
penultimate features are cached. Then retrains the base model from scratch on the retain
set with the same recipe, in the same process, and prints the ratio.

    UNLEARN_DATA_DIR=../shared/data .venv/bin/python benchmarks/forget_latency.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import httpx
from _common import admin_headers, fresh_context, percentile, serve, write_result

from app.evaluation.service import named_set_masks
from app.ml.training import TrainingRecipe, train_model
from app.unlearning.base import ForgetTarget


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--skip-retrain", action="store_true")
    args = parser.parse_args()

    ctx = fresh_context()
    data = ctx.model_data(ctx.model_name)
    body = {"classes": [2], "method": "output_dampening", "params": {"alpha": 0.01},
            "requested_by": "benchmark", "subject_reference": "BENCH"}
    latencies = []
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
    median = statistics.median(latencies)
    lines = [
        f"Class forget request through the API (output dampening, full before/after metrics "
        f"over 70,000 images, features cached), {args.requests} requests:",
        f"- median {median * 1000:.0f} ms, p90 {percentile(latencies, 90) * 1000:.0f} ms, "
        f"max {max(latencies) * 1000:.0f} ms",
    ]
    if not args.skip_retrain:
        retain = ~named_set_masks(data, ForgetTarget(classes=(2,)))["forget"]
        started = time.perf_counter()
        train_model(data.train_images[retain], data.train_labels[retain], TrainingRecipe())
        retrain = time.perf_counter() - started
        lines += [
            f"- retraining from scratch on the retain set ({int(retain.sum())} images, "
            f"base recipe): {retrain:.1f} s",
            f"- speed-up of a forget request over retraining: {retrain / median:.0f}x",
        ]
    report = "\n".join(lines)
    print(report)
    write_result("forget_latency.md", report)
    ctx.close()


if __name__ == "__main__":
    main()
