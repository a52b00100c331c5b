"""Shared set-up for the benchmarks: a fresh service on full MNIST in a temp directory,
optionally served by a real uvicorn server on loopback in a background thread."""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from app.core.config import load_settings  # noqa: E402
from app.context import ServiceContext  # noqa: E402
from app.wiring import build_context  # noqa: E402
from app.db.migrations import upgrade  # noqa: E402
from app.forgetting.execution import claim_next, execute_request  # noqa: E402
from app.forget_requests.models import ForgetRequest  # noqa: E402
from app.forgetting.schemas import ForgetRequestCreate  # noqa: E402
from app.forgetting.service import file_request  # noqa: E402
from app.registration import ensure_base_version  # noqa: E402

DATA_DIR = Path(os.environ.get("UNLEARN_DATA_DIR", ROOT.parent / "shared" / "data"))
BASE_WEIGHTS = ROOT / "models" / "base" / "mnist-cnn-base.safetensors"
RESULTS = ROOT / "benchmarks" / "results"


DEFAULT_POSTGRES_ADMIN_URL = os.environ.get(
    "UNLEARN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def create_postgres_database(admin_url: str = DEFAULT_POSTGRES_ADMIN_URL) -> str:
    """A fresh, empty PostgreSQL database (admin_url must be allowed to CREATE DATABASE)."""
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"unlearn_bench_{uuid.uuid4().hex[:10]}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(url: str, admin_url: str = DEFAULT_POSTGRES_ADMIN_URL) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" '
                                f'WITH (FORCE)'))
    engine.dispose()


def worker_process(ctx: ServiceContext, queues: str, log_path: Path, threads: int = 1):
    """`unlearn worker --queues ...` on the context's (PostgreSQL) database and store;
    returns the process once its log says it is ready (data, model, features loaded)."""
    import subprocess

    settings = ctx.settings
    env = {key: value for key, value in os.environ.items() if not key.startswith("UNLEARN_")}
    env.update({
        "UNLEARN_DATABASE_URL": settings.database_url,
        "UNLEARN_ARTIFACT_DIR": str(settings.artifact_dir),
        "UNLEARN_DATA_DIR": str(settings.data_dir), "UNLEARN_CACHE_DIR": str(settings.cache_dir),
        "UNLEARN_LOG_LEVEL": "info", "OMP_NUM_THREADS": str(threads),
    })
    log = open(log_path, "w+b")
    process = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--queues", queues],
                               cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while b" ready" not in log_path.read_bytes():
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"worker did not become ready; see {log_path}")
        time.sleep(0.1)
    return process


def fresh_context(workdir: Path | None = None, database_url: str | None = None,
                  **overrides) -> ServiceContext:
    """A migrated database (SQLite in the workdir unless ``database_url``) with the shipped
    base model as version 1. The feature cache is the project's usual ./var/cache, so
    repeated runs reuse computed features."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="unlearn-bench-"))
    settings = load_settings(
        database_url=database_url or f"sqlite:///{workdir / 'bench.db'}",
        artifact_dir=workdir / "models",
        data_dir=DATA_DIR,
        cache_dir=ROOT / "var" / "cache",
        signing_key_path=workdir / "signing-key.pem",
        **overrides,
    )
    upgrade(settings.database_url)
    ctx = build_context(settings)
    ensure_base_version(ctx, BASE_WEIGHTS)
    return ctx


def admin_headers(ctx: ServiceContext) -> dict[str, str]:
    """An admin API key for the benchmark's requests (every route but health needs one)."""
    from app.auth.service import create_key

    with ctx.db.session() as session:
        _, token = create_key(session, name="benchmark", roles=["admin"],
                              created_by="benchmark")
    return {"Authorization": f"Bearer {token}"}


def write_result(name: str, text: str) -> None:
    """Save a benchmark's report under benchmarks/results (the README quotes these)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / name).write_text(text + "\n")


def base_version(ctx: ServiceContext):
    """The registry row of version 1 (the shipped base model)."""
    from app.registry.service import get_version

    with ctx.db.session() as session:
        return get_version(session, ctx.model_name, 1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve(ctx: ServiceContext, start_worker: bool | None = None, *, app=None):
    """Run the app (default: ``create_app(ctx, start_worker)``) under uvicorn on 127.0.0.1
    in a thread; yields the base URL. ``start_worker=False``: no embedded worker (a worker
    process runs the requests). ``app`` is keyword-only: passed in second place it was
    taken for ``start_worker``, so a fresh app (with an embedded worker) was served instead
    of the caller's, and the caller's statistics described an app nobody called."""
    import uvicorn

    from app.main import create_app

    port = free_port()
    if app is not None and start_worker is not None:
        raise ValueError("start_worker is create_app's: with app given, make the app so")
    server = uvicorn.Server(uvicorn.Config(app or create_app(ctx, start_worker),
                                           host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def scenario_target(name: str, data, seed: int) -> dict:
    """The forget set of a method-comparison scenario: a whole class, a tenth of one
    class's images, or 600 random training images (seeded)."""
    rng = np.random.default_rng(seed)
    if name == "class":
        return {"classes": [2], "sample_ids": []}
    if name == "class_subset":
        ids = data.train_ids[data.train_labels == 2].numpy()
        pick = rng.choice(len(ids), size=len(ids) // 10, replace=False)
        return {"classes": [], "sample_ids": sorted(ids[pick].tolist())}
    if name == "random600":
        pick = rng.choice(data.num_train, size=min(600, data.num_train // 10), replace=False)
        return {"classes": [], "sample_ids": sorted(data.train_ids[pick].tolist())}
    raise ValueError(name)


def run_request(ctx: ServiceContext, *, version: int, target: dict, method: str,
                params: dict) -> tuple[ForgetRequest, float]:
    """One forget request the service's own way (filing, claim, execution with full
    metrics and verification, publication); returns the finished request (detached) and
    the wall time of filing + execution."""
    body = ForgetRequestCreate(model_version=version, method=method, params=params,
                               requested_by="benchmark", subject_reference="bench", **target)
    start = time.perf_counter()
    with ctx.db.session() as session:
        request_id = file_request(session, ctx.model_name, body, "benchmark",
                                  ctx.settings.max_sample_ids, settings=ctx.settings,
                                  data=ctx.model_data(ctx.model_name)).id
    assert claim_next(ctx, "bench") == request_id
    execute_request(ctx, request_id, "bench")
    elapsed = time.perf_counter() - start
    with ctx.db.session() as session:
        request = session.get(ForgetRequest, request_id)
        if request.status not in ("completed", "unverified"):
            raise RuntimeError(f"{method} failed: {request.error}")
        session.expunge(request)
        return request, elapsed
