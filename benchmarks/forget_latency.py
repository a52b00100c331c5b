"""End-to-end latency of a class forget request through the HTTP API, against retraining.

Starts the service under uvicorn on 127.0.0.1 (shipped base model, full MNIST), files class
forget requests with ``?wait=true`` (each returns after the new version is published with
full before/after metrics over all 70,000 images), and times them once the penultimate
features are cached. Two engines, measured in the same run:

- ``sqlite``: the embedded default, SQLite and the API's in-process executor;
- ``postgresql``: the job engine, PostgreSQL, the API with no embedded worker and one
  light worker process (``unlearn worker --queues light``) taking the requests from
  procrastinate.

Then retrains the base model from scratch on the retain set with the same recipe, in the
same process, and prints the ratio.

    UNLEARN_DATA_DIR=../shared/data .venv/bin/python benchmarks/forget_latency.py

PostgreSQL: $UNLEARN_TEST_POSTGRES_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/test)
must be allowed to CREATE DATABASE.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from _common import (
    admin_headers,
    create_postgres_database,
    drop_postgres_database,
    fresh_context,
    percentile,
    serve,
    worker_process,
    write_result,
)

from app.evaluation.service import named_set_masks
from app.ml.training import TrainingRecipe, train_model
from app.unlearning.base import ForgetTarget

BODY = {"classes": [2], "method": "output_dampening", "params": {"alpha": 0.01},
        "requested_by": "benchmark", "subject_reference": "BENCH"}


def time_requests(ctx, count: int, start_worker: bool | None) -> list[float]:
    latencies = []
    headers = admin_headers(ctx)  # before serving, so no bootstrap key is printed
    with serve(ctx, start_worker) as url, \
            httpx.Client(base_url=url, timeout=120, headers=headers) as client:
        first = client.post("/forget-requests?wait=true", json=BODY).json()  # warms caches
        assert first["status"] in ("completed", "unverified"), first
        for i in range(count):
            started = time.perf_counter()
            response = client.post("/forget-requests?wait=true",
                                   json=BODY | {"classes": [i % 10]})
            latencies.append(time.perf_counter() - started)
            result = response.json()
            assert result["status"] in ("completed", "unverified"), result
            assert result["metrics"]["after"]["retain"]["count"] > 0
            assert result["queue"] == "light"
    return latencies


def run_sqlite(count: int) -> list[float]:
    ctx = fresh_context()
    try:
        return time_requests(ctx, count, start_worker=True)
    finally:
        ctx.close()


def run_postgresql(count: int, workdir: Path) -> list[float]:
    url = create_postgres_database()
    ctx = fresh_context(workdir, database_url=url, embedded_worker=False)
    worker = None
    try:
        worker = worker_process(ctx, "light", workdir / "light-worker.log",
                                threads=int(os.environ.get("OMP_NUM_THREADS", "2")))
        return time_requests(ctx, count, start_worker=False)
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
        ctx.close()
        drop_postgres_database(url)


def describe(latencies: list[float]) -> str:
    return (f"median {statistics.median(latencies) * 1000:.0f} ms, "
            f"p90 {percentile(latencies, 90) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--skip-retrain", action="store_true")
    parser.add_argument("--result", default="forget_latency.md",
                        help="file name under benchmarks/results, or a path")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="unlearn-latency-"))
    engines = args.engines.split(",")
    results = {}
    for engine in engines:
        results[engine] = (run_sqlite(args.requests) if engine == "sqlite"
                           else run_postgresql(args.requests, workdir))
    labels = {"sqlite": "SQLite, in-process executor",
              "postgresql": "PostgreSQL + procrastinate, one light worker process"}
    lines = [
        f"Class forget request through the API (output dampening, full before/after metrics "
        f"over 70,000 images, features cached), {args.requests} requests per engine, "
        f"{os.cpu_count()} CPU cores, load average at start "
        f"{os.getloadavg()[0]:.1f}:",
    ]
    for engine, latencies in results.items():
        lines.append(f"- {labels[engine]}: {describe(latencies)}")
    if not args.skip_retrain:
        ctx = fresh_context()
        data = ctx.model_data(ctx.model_name)
        retain = ~named_set_masks(data, ForgetTarget(classes=(2,)))["forget"]
        started = time.perf_counter()
        train_model(data.train_images[retain], data.train_labels[retain], TrainingRecipe(),
                    device=ctx.device)
        retrain = time.perf_counter() - started
        ctx.close()
        slowest = max(statistics.median(v) for v in results.values())
        lines += [
            f"- retraining from scratch on the retain set ({int(retain.sum())} images, "
            f"base recipe): {retrain:.1f} s",
            f"- speed-up of a forget request over retraining (slower engine's median): "
            f"{retrain / slowest:.0f}x",
        ]
    report = "\n".join(lines)
    print(report)
    write_result(args.result, report)


if __name__ == "__main__":
    main()
