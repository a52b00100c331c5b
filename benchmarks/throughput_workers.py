"""Forget-request throughput with 1, 2 and 3 worker processes on the job engine
(PostgreSQL + procrastinate).

For each worker count: a fresh PostgreSQL database (migrated: our tables and procrastinate's;
shipped base model as version 1, full MNIST), N worker processes (`python -m app.cli worker
--queues heavy,light`) started and warmed up (data, model, cached penultimate features),
then R class forget requests (output dampening, full before/after metrics over 70,000
images) filed with their procrastinate jobs in one transaction. Timed from that commit
until the last request is completed; requests per minute and the ratio to one worker, all
measured in this run.

    UNLEARN_DATA_DIR=../shared/data .venv/bin/python benchmarks/throughput_workers.py

PostgreSQL: --admin-url (default $UNLEARN_TEST_POSTGRES_URL or
postgresql+psycopg://postgres@127.0.0.1:5432/test) must be allowed to CREATE DATABASE.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    BASE_WEIGHTS,
    DATA_DIR,
    DEFAULT_POSTGRES_ADMIN_URL,
    ROOT,
    create_postgres_database,
    drop_postgres_database,
    write_result,
)
from sqlalchemy import func, select

from app.core.config import load_settings
from app.wiring import build_context
from app.db.migrations import upgrade
from app.forget_requests.models import ForgetRequest
from app.forgetting.schemas import ForgetRequestCreate
from app.forgetting.service import file_request
from app.registry.models import ModelVersion
from app.registration import ensure_base_version

def run(workers: int, requests: int, admin_url: str, workdir: Path, threads: int) -> dict:
    url = create_postgres_database(admin_url)
    settings = load_settings(database_url=url, artifact_dir=workdir / f"models-{workers}",
                             data_dir=DATA_DIR, cache_dir=ROOT / "var" / "cache",
                             base_model_path=BASE_WEIGHTS, embedded_worker=False)
    upgrade(url)
    ctx = build_context(settings)
    ensure_base_version(ctx, BASE_WEIGHTS)  # also computes (or loads) the cached features
    env = {key: value for key, value in os.environ.items() if not key.startswith("UNLEARN_")}
    env.update({
        "UNLEARN_DATABASE_URL": url, "UNLEARN_ARTIFACT_DIR": str(settings.artifact_dir),
        "UNLEARN_DATA_DIR": str(DATA_DIR), "UNLEARN_CACHE_DIR": str(settings.cache_dir),
        "UNLEARN_LOG_LEVEL": "warning", "OMP_NUM_THREADS": str(threads),
    })
    logs = [open(workdir / f"worker-{workers}-{n}.log", "w+b") for n in range(workers)]
    processes = [
        subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--queues", "heavy,light"],
                         cwd=ROOT, env=env | {"UNLEARN_LOG_LEVEL": "info"}, stdout=log,
                         stderr=subprocess.STDOUT)
        for log in logs
    ]
    try:
        deadline = time.monotonic() + 300
        while not all(b" ready" in (workdir / f"worker-{workers}-{n}.log").read_bytes()
                      for n in range(workers)):
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                raise RuntimeError("workers did not become ready; see " + str(workdir))
            time.sleep(0.1)

        with ctx.db.session() as session:  # all R requests and jobs visible at one instant
            for n in range(requests):
                body = ForgetRequestCreate(classes=[n % 10], method="output_dampening",
                                           params={"alpha": 0.5}, requested_by="benchmark",
                                           subject_reference=f"BENCH-{n}")
                file_request(session, ctx.model_name, body, "benchmark", 10_000,
                             data=ctx.model_data(ctx.model_name))
        started = time.perf_counter()
        while True:
            with ctx.db.session() as session:
                pending = session.scalar(select(func.count()).select_from(ForgetRequest)
                                         .where(ForgetRequest.status.in_(("queued", "running"))))
            if pending == 0:
                break
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        with ctx.db.session() as session:
            statuses = dict(session.execute(select(ForgetRequest.status, func.count())
                                            .group_by(ForgetRequest.status)).all())
            versions = session.scalar(select(func.count(func.distinct(ModelVersion.version)))
                                      .where(ModelVersion.forget_request_id.is_not(None)))
            # worker_id is host:pid:attempt; the processes are the host:pid prefixes.
            holders = len({worker_id.rsplit(":", 1)[0] for worker_id in
                           session.scalars(select(ForgetRequest.worker_id))})
        assert sum(statuses.get(s, 0) for s in ("completed", "unverified")) == requests, statuses
        assert versions == requests
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(60)
        for log in logs:
            log.close()
        ctx.close()
        drop_postgres_database(url, admin_url)
    return {"workers": workers, "requests": requests, "seconds": elapsed,
            "per_minute": requests / elapsed * 60, "holders": holders}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--workers", default="1,2,3")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch/OpenMP threads per worker process (OMP_NUM_THREADS)")
    parser.add_argument("--admin-url", default=DEFAULT_POSTGRES_ADMIN_URL)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="unlearn-throughput-"))
    load_at_start = os.getloadavg()[0]
    results = [run(int(k), args.requests, args.admin_url, workdir, args.threads)
               for k in args.workers.split(",")]
    baseline = results[0]["per_minute"]
    lines = [
        f"Forget requests per minute on PostgreSQL + procrastinate (output dampening, full before/after "
        f"metrics over 70,000 images, features cached; {args.requests} requests per run, "
        f"{args.threads} thread(s) per worker, {os.cpu_count()} CPU cores, load average "
        f"at start {load_at_start:.1f}):",
        "",
        "| workers | seconds | requests/min | ratio to 1 worker | workers that took requests |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r['workers']} | {r['seconds']:.1f} | {r['per_minute']:.0f} | "
                     f"{r['per_minute'] / baseline:.2f} | {r['holders']} |")
    report = "\n".join(lines)
    print(report)
    write_result("throughput_workers.md", report)


if __name__ == "__main__":
    main()
