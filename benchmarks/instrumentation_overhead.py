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
from app.wiring import build_context
from app.db.migrations import upgrade
from app.observability.logs import configure_logging
from app.registration import ensure_base_version


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


def measure(positions: tuple[bool, bool], batch: bytes, single: bytes, args) -> dict:
    """Serve two fresh services (``positions``: instrumented or not, in creation order) and
    alternate /predict calls between them; per-call seconds by 'on'/'off'."""
    names = ["on" if instrumented else "off" for instrumented in positions]
    contexts = {name: make_context(Path(tempfile.mkdtemp(prefix=f"unlearn-{name}-")), on)
                for name, on in zip(names, positions)}
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
        counted = [line for line in clients["on"].get("/metrics").text.splitlines()
                   if line.startswith("unlearn_predicted_images_total{")]
    for ctx in contexts.values():
        ctx.close()
    return {"times": times, "counted": counted}


def middleware_cost_us(calls: int) -> dict[str, float]:
    """Per-request time of the whole ASGI stack on a trivial route (GET /healthz), called
    in-process through httpx's ASGI transport on one event loop: on vs off, in alternating
    blocks. No sockets, no threads, no model: what is left is the middleware itself."""
    import asyncio

    from app.main import create_app

    async def run() -> dict[str, list[float]]:
        apps = {}
        for name, on in (("on", True), ("off", False)):
            ctx = make_context(Path(tempfile.mkdtemp(prefix=f"unlearn-asgi-{name}-")), on)
            app = create_app(ctx, start_worker=False)
            app.state.ctx = ctx  # what the lifespan sets; no lifespan needed for /healthz
            apps[name] = (app, ctx)
        per_call: dict[str, list[float]] = {"on": [], "off": []}
        clients = {name: httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                           base_url="http://bench")
                   for name, (app, _) in apps.items()}
        for block in range(20):
            for name in (("on", "off") if block % 2 == 0 else ("off", "on")):
                started = time.perf_counter()
                for _ in range(calls // 20):
                    await clients[name].get("/healthz")
                per_call[name].append((time.perf_counter() - started) / (calls // 20))
        for client in clients.values():
            await client.aclose()
        for _, ctx in apps.values():
            ctx.close()
        return per_call

    per_call = asyncio.run(run())
    return {name: statistics.median(values) * 1e6 for name, values in per_call.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--single", type=int, default=300,
                        help="single-image calls per service and phase, interleaved")
    args = parser.parse_args()

    devnull = open(os.devnull, "w")
    configure_logging("info", "json", stream=devnull)
    from app.ml.data import load_mnist

    test_images = load_mnist(DATA_DIR, download=False).test_images
    images = test_images[: args.batch]
    batch = orjson.dumps({"instances": [[[round(v, 4) for v in row] for row in image[0].tolist()]
                                        for image in images]})
    single = orjson.dumps({"instances": [images[0, 0].tolist()]})
    # Two services in one process are not equally fast even when configured alike (the
    # first one made is slower here, by up to 15%): so the run has two phases with the
    # positions swapped, and the ratio is the geometric mean of the two phases' ratios.
    phases = [measure((True, False), batch, single, args),
              measure((False, True), batch, single, args)]
    stack_us = middleware_cost_us(4000)

    def ratio(kind: str, phase: dict) -> float:
        on, off = (statistics.median(phase["times"][name][kind]) for name in ("on", "off"))
        return off / on  # throughput on / throughput off

    lines = [f"/predict with instrumentation on vs off, same process, alternating calls "
             f"({args.rounds} rounds of {args.batch}-image JSON batches and {args.single} "
             f"single-image calls per service; two phases with the services' positions "
             f"swapped):"]
    for kind, label in (("batch", f"{args.batch}-image batches"), ("single", "single image")):
        ratios = [ratio(kind, phase) for phase in phases]
        geometric = (ratios[0] * ratios[1]) ** 0.5
        rates = []
        for index, phase in enumerate(phases, start=1):
            per_call = {name: statistics.median(phase["times"][name][kind]) for name in ("on", "off")}
            scale = args.batch if kind == "batch" else 1
            unit = "images/s" if kind == "batch" else "calls/s"
            rates.append(f"phase {index}: on {scale / per_call['on']:,.0f}, off "
                         f"{scale / per_call['off']:,.0f} {unit} ({ratios[index - 1]:.1%})")
        lines.append(f"- {label}: on = {geometric:.1%} of off (geometric mean); "
                     + "; ".join(rates))
    batch_s = statistics.median(phases[0]["times"]["off"]["batch"]
                                + phases[1]["times"]["off"]["batch"])
    added_us = stack_us["on"] - stack_us["off"]
    lines.append(
        f"- the middleware itself (GET /healthz in-process, no sockets or threads): on "
        f"{stack_us['on']:.0f} µs, off {stack_us['off']:.0f} µs per request: "
        f"{added_us:.0f} µs added, {added_us / 1e6 / batch_s:.2%} of a {args.batch}-image "
        f"/predict call ({batch_s * 1000:.0f} ms here)")
    single_on = phases[0]["times"]["on"]["single"] + phases[1]["times"]["on"]["single"]
    single_off = phases[0]["times"]["off"]["single"] + phases[1]["times"]["off"]["single"]
    lines += [
        f"- single-image latency: on p50 {statistics.median(single_on) * 1000:.2f} ms / p90 "
        f"{percentile(single_on, 90) * 1000:.2f} ms, off p50 "
        f"{statistics.median(single_off) * 1000:.2f} ms / p90 "
        f"{percentile(single_off, 90) * 1000:.2f} ms",
        "- 'on' = Prometheus HTTP instrumentation + prediction counters + one JSON access "
        "log line per request; the 'on' service counted "
        + (phases[1]["counted"][0] if phases[1]["counted"] else "nothing"),
        f"- load average at the end: {os.getloadavg()[0]:.1f} (2 CPUs)",
    ]
    report = "\n".join(lines)
    print(report)
    write_result("instrumentation_overhead.md", report)


if __name__ == "__main__":
    main()
