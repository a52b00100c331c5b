"""/predict throughput with the operations instrumentation on and off, in the same run.

Two services on the shipped base model, served by uvicorn on 127.0.0.1 in threads of this
process: one with metrics (HTTP instrumentation, prediction counters) and the per-request
access log on, writing JSON log lines (to /dev/null, so formatting is paid but no
terminal is), and one with both off. Rounds alternate between them (the order flips every
round) so that load from elsewhere on a shared machine hits both alike; medians compared.

    UNLEARN_DATA_DIR=../shared/data .venv/bin/python benchmarks/instrumentation_overhead.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import orjson
from _common import (
    BASE_WEIGHTS,
    DATA_DIR,
    ROOT,
    admin_headers,
    percentile,
    serve,
    write_result,
)

from app.core.config import load_settings
from app.core.context import build_context
from app.db.migrations import upgrade
from app.observability.logs import configure_logging
from app.registry.registration import ensure_base_version


def make_context(workdir: Path, instrumented: bool):
    settings = load_settings(
        database_url=f"sqlite:///{workdir / 'bench.db'}",
        artifact_dir=workdir / "models",
        data_dir=DATA_DIR,
        cache_dir=ROOT / "var" / "cache",
        signing_key_path=workdir / "signing-key.pem",
        webhook_secret_path=workdir / "webhook-secret",
        embedded_worker=False,
        metrics_enabled=instrumented,
        access_log=instrumented,
    )
    upgrade(settings.database_url)
    ctx = build_context(settings)
    ensure_base_version(ctx, BASE_WEIGHTS)
    return ctx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--single", type=int, default=300,
                        help="single-image calls per service, interleaved")
    args = parser.parse_args()

    devnull = open(os.devnull, "w")
    configure_logging("info", "json", stream=devnull)
    contexts = {name: make_context(Path(tempfile.mkdtemp(prefix=f"unlearn-{name}-")), on)
                for name, on in (("on", True), ("off", False))}
    data = contexts["on"].data.get()
    images = data.test_images[: args.batch]
    batch = orjson.dumps({"instances": [[[round(v, 4) for v in row] for row in image[0].tolist()]
                                        for image in images]})
    single = orjson.dumps({"instances": [images[0, 0].tolist()]})
    times = {name: {"batch": [], "single": []} for name in contexts}

    with ExitStack() as stack:
        clients = {}
        for name, ctx in contexts.items():
            url = stack.enter_context(serve(ctx))
            headers = {"content-type": "application/json", **admin_headers(ctx)}
            clients[name] = stack.enter_context(
                httpx.Client(base_url=url, timeout=60, headers=headers))
        for client in clients.values():  # warm-up: model cache, allocator, connections
            for _ in range(3):
                assert client.post("/predict", content=batch).status_code == 200
        assert clients["on"].get("/metrics").status_code == 200
        assert clients["off"].get("/metrics").status_code == 404

        def timed(name: str, kind: str, body: bytes) -> None:
            started = time.perf_counter()
            response = clients[name].post("/predict", content=body)
            times[name][kind].append(time.perf_counter() - started)
            assert response.status_code == 200

        for round_number in range(args.rounds):
            order = ("on", "off") if round_number % 2 == 0 else ("off", "on")
            for name in order:
                timed(name, "batch", batch)
        for call in range(args.single):
            order = ("on", "off") if call % 2 == 0 else ("off", "on")
            for name in order:
                timed(name, "single", single)
        predictions = clients["on"].get("/metrics").text

    throughput = {name: args.batch / statistics.median(times[name]["batch"])
                  for name in contexts}
    single_rate = {name: 1 / statistics.median(times[name]["single"]) for name in contexts}
    counted = [line for line in predictions.splitlines()
               if line.startswith("unlearn_predicted_images_total{")]
    load = os.getloadavg()[0]
    report = "\n".join([
        f"/predict with instrumentation on vs off, same process, alternating "
        f"({args.rounds} rounds of {args.batch}-image JSON batches, {args.single} "
        f"single-image calls each):",
        f"- {args.batch}-image batches: on {throughput['on']:,.0f} images/s, "
        f"off {throughput['off']:,.0f} images/s "
        f"(on = {throughput['on'] / throughput['off']:.1%} of off)",
        f"- single image: on {single_rate['on']:,.0f} calls/s "
        f"(p50 {statistics.median(times['on']['single']) * 1000:.2f} ms, "
        f"p90 {percentile(times['on']['single'], 90) * 1000:.2f} ms), "
        f"off {single_rate['off']:,.0f} calls/s "
        f"(p50 {statistics.median(times['off']['single']) * 1000:.2f} ms, "
        f"p90 {percentile(times['off']['single'], 90) * 1000:.2f} ms) "
        f"(on = {single_rate['on'] / single_rate['off']:.1%} of off)",
        f"- 'on' = Prometheus HTTP instrumentation + prediction counters + JSON access log "
        f"line per request; the 'on' service counted: {counted[0] if counted else 'nothing'}",
        f"- load average at the end: {load:.1f}",
    ])
    print(report)
    write_result("instrumentation_overhead.md", report)
    for ctx in contexts.values():
        ctx.close()


if __name__ == "__main__":
    main()
