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

from app.core.config import load_settings  # noqa: E402
from app.core.context import ServiceContext, build_context  # noqa: E402
from app.db.migrations import upgrade  # noqa: E402
from app.registry.registration import ensure_base_version  # noqa: E402

DATA_DIR = Path(os.environ.get("UNLEARN_DATA_DIR", ROOT.parent / "shared" / "data"))
BASE_WEIGHTS = ROOT / "models" / "base" / "mnist-cnn-base.safetensors"
RESULTS = ROOT / "benchmarks" / "results"


def fresh_context(workdir: Path | None = None) -> ServiceContext:
    """A migrated SQLite database with the shipped base model as version 1. The feature
    cache is the project's usual ./var/cache, so repeated runs reuse computed features."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="unlearn-bench-"))
    settings = load_settings(
        database_url=f"sqlite:///{workdir / 'bench.db'}",
        artifact_dir=workdir / "models",
        data_dir=DATA_DIR,
        cache_dir=ROOT / "var" / "cache",
        signing_key_path=workdir / "signing-key.pem",
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
def serve(ctx: ServiceContext, app=None):
    """Run the app (default: ``create_app(ctx)``) under uvicorn on 127.0.0.1 in a thread;
    yields the base URL."""
    import uvicorn

    from app.main import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app or create_app(ctx), host="127.0.0.1", port=port,
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
