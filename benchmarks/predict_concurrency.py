"""Many concurrent single-image clients, with and without dynamic batching, on the
configured device (UNLEARN_DEVICE; the report names it).

Serves the shipped base model twice under uvicorn on 127.0.0.1 (threads of this process):
once with dynamic batching (the settings' defaults unless given), once without. A separate
client process keeps ``--clients`` single-image ``/predict`` calls in flight (asyncio,
one kept-alive connection per client, prebuilt requests; ``--client httpx`` for httpx)
for ``--seconds`` against each server in turn, for ``--rounds`` alternations, and reports
requests/second and latency percentiles of each.

``--architecture`` serves a model of another architecture on MNIST instead, with its
seeded initial weights (its answers mean nothing; its forward pass costs what a trained
one's does): where a single-image pass costs far more than its share of a batched one
(MobileNetV3-small on a CPU, as most models on a GPU), batching has something to gather.

    UNLEARN_DATA_DIR=../shared/data .venv/bin/python benchmarks/predict_concurrency.py
    ... benchmarks/predict_concurrency.py --architecture mobilenet-v3-small
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import multiprocessing
import statistics
import time
import urllib.parse
from collections import deque
from contextlib import ExitStack, contextmanager

import numpy as np
import orjson
import torch
from _common import admin_headers, fresh_context, percentile, serve, write_result

from app.architectures.catalog import ARCHITECTURES, build_model
from app.context import ServiceContext
from app.datasets.service import MNIST_DATASET
from app.main import create_app
from app.ml.device import describe_device
from app.prediction.predictor import Predictor
from app.registration import model_spec, register_trained_model


def client_load(url: str, headers: dict, bodies: list[bytes], clients: int,
                seconds: float, kind: str = "raw") -> tuple[int, list[float], int]:
    """Runs in the client process: (completed calls, latencies in s, failed calls).
    ``kind``: "raw" (prebuilt HTTP/1.1 requests on kept-alive asyncio streams) or
    "httpx" (httpx.AsyncClient)."""
    if kind == "raw":
        return _raw_client_load(url, headers, bodies, clients, seconds)
    import httpx

    async def run():
        latencies: list[float] = []
        failures = 0
        deadline = time.perf_counter() + seconds
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits,
                                     timeout=60) as client:
            async def one_client(index: int):
                nonlocal failures
                body = bodies[index % len(bodies)]
                while time.perf_counter() < deadline:
                    started = time.perf_counter()
                    response = await client.post("/predict", content=body)
                    if response.status_code == 200:
                        latencies.append(time.perf_counter() - started)
                    else:
                        failures += 1
            await asyncio.gather(*(one_client(i) for i in range(clients)))
        return len(latencies), latencies, failures

    return asyncio.run(run())


def _raw_client_load(url: str, headers: dict, bodies: list[bytes], clients: int,
                     seconds: float) -> tuple[int, list[float], int]:
    """The load with as little client work as HTTP allows: each client's request is built
    once and written again and again on its own kept-alive connection, and only the status
    line and Content-Length of an answer are read. On two shared cores httpx's own work
    took most of the CPU, so the benchmark measured its client more than the servers."""
    try:
        import uvloop
        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        loop_factory = asyncio.new_event_loop
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80

    def request(body: bytes) -> bytes:
        lines = ["POST /predict HTTP/1.1", f"host: {host}:{port}",
                 f"content-length: {len(body)}",
                 *(f"{name}: {value}" for name, value in headers.items())]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def run():
        latencies: list[float] = []
        failures = 0
        deadline = time.perf_counter() + seconds

        async def one_client(index: int):
            nonlocal failures
            message = request(bodies[index % len(bodies)])
            reader, writer = await asyncio.open_connection(host, port)
            try:
                while time.perf_counter() < deadline:
                    started = time.perf_counter()
                    writer.write(message)
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    await reader.readexactly(length)
                    if head.startswith(b"HTTP/1.1 200"):
                        latencies.append(time.perf_counter() - started)
                    else:
                        failures += 1
            finally:
                writer.close()

        await asyncio.gather(*(one_client(i) for i in range(clients)))
        return len(latencies), latencies, failures

    loop = loop_factory()
    try:
        return loop.run_until_complete(run())
    finally:
        loop.close()


def register_initial_weights(ctx: ServiceContext, architecture: str) -> str:
    """Register ``architecture`` on MNIST with its initial weights (seed 0) as a model of
    its own, ``mnist-<architecture>``; returns the name."""
    name = f"mnist-{architecture}"
    torch.manual_seed(0)
    model = build_model(model_spec(ctx, MNIST_DATASET, architecture))
    register_trained_model(ctx, model, actor="benchmark", model_name=name,
                           dataset_name=MNIST_DATASET,
                           model_card={"note": "initial weights, for throughput benchmarks"})
    return name


@contextmanager
def served_apps(ctx: ServiceContext, batching: dict | None = None):
    """The two servers the benchmark measures, each under uvicorn on loopback: yields
    ``{"batched": (url, app), "unbatched": (url, app)}``. ``batching``: settings for the
    batched one (e.g. ``predict_batch_max_size``). Each app gets its Predictor up front, so
    its batcher is the one the served app uses and the one read for statistics (the tests
    start servers through this function too)."""
    variants = {
        "batched": {"predict_batching": True, **(batching or {})},
        "unbatched": {"predict_batching": False},
    }
    with ExitStack() as stack:
        served = {}
        for name, overrides in variants.items():
            context = dataclasses.replace(
                ctx, settings=ctx.settings.model_copy(update=overrides))
            app = create_app(context, start_worker=False)
            app.state.predictor = Predictor(context)
            served[name] = (stack.enter_context(serve(context, app=app)), app)
        batcher = served["batched"][1].state.predictor.batcher
        if batcher is None or served["unbatched"][1].state.predictor.batcher is not None:
            raise RuntimeError("the batched server must batch and the other must not")
        # Every pass of the measured rounds, not just the last 1,024.
        batcher.history = deque(maxlen=1_000_000)
        yield served


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-batch", type=int, default=None)
    parser.add_argument("--max-wait-ms", type=float, default=None)
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw",
                        help="raw: prebuilt requests on kept-alive sockets (default); "
                             "httpx: httpx.AsyncClient")
    parser.add_argument("--architecture", choices=sorted(ARCHITECTURES), default=None,
                        help="serve this architecture on MNIST with its initial weights "
                             "(throughput only) instead of the shipped model")
    parser.add_argument("--result", default="predict_concurrency.md")
    args = parser.parse_args()

    ctx = fresh_context()
    model_name = ctx.model_name
    if args.architecture is not None:
        model_name = register_initial_weights(ctx, args.architecture)
    batching = {}
    if args.max_batch is not None:
        batching["predict_batch_max_size"] = args.max_batch
    if args.max_wait_ms is not None:
        batching["predict_batch_max_wait_ms"] = args.max_wait_ms
    data = ctx.model_data(ctx.model_name)
    images = data.test_images[: args.clients, 0].numpy()
    bodies = [orjson.dumps({"model_name": model_name,
                            "instances": [np.round(image, 4).tolist()]}) for image in images]
    headers = {"content-type": "application/json", **admin_headers(ctx)}

    results: dict[str, list] = {"batched": [], "unbatched": []}
    spawn = multiprocessing.get_context("spawn")
    with served_apps(ctx, batching) as served, spawn.Pool(1) as pool:
        for url, _ in served.values():  # warm-up
            pool.apply(client_load, (url, headers, bodies, args.clients, 1.0, args.client))
        batcher = served["batched"][1].state.predictor.batcher
        batcher.history.clear()
        calls_before = batcher.calls
        for _ in range(args.rounds):
            for name, (url, _) in served.items():
                results[name].append(pool.apply(
                    client_load, (url, headers, bodies, args.clients, args.seconds,
                                  args.client)))
        batch_sizes = [r.images for r in batcher.history]
        settings = served["batched"][1].state.ctx.settings
    answered = sum(r[0] + r[2] for r in results["batched"])
    if batcher.calls - calls_before < sum(r[0] for r in results["batched"]):
        # The statistics would describe a batcher the requests did not go through.
        raise RuntimeError(f"the batcher saw {batcher.calls - calls_before} calls of the "
                           f"{answered} the batched server answered")

    summary = {}
    for name, runs in results.items():
        completed = sum(r[0] for r in runs)
        latencies = [value for r in runs for value in r[1]]
        summary[name] = {
            "rate": completed / (args.seconds * len(runs)),
            "p50": statistics.median(latencies) * 1000,
            "p99": percentile(latencies, 99) * 1000,
            "failures": sum(r[2] for r in runs),
        }
    b, u = summary["batched"], summary["unbatched"]
    # Each round measures both servers back to back, so a round's ratio shares its load.
    ratios = [batched[0] / max(unbatched[0], 1)
              for batched, unbatched in zip(results["batched"], results["unbatched"])]
    report = "\n".join([
        f"{args.clients} concurrent single-image /predict clients (JSON), model "
        f"{model_name}{' (initial weights)' if args.architecture else ''}, device: "
        f"{describe_device(ctx.device)}; {args.rounds} alternating rounds of "
        f"{args.seconds:g} s each; client in a separate process ({args.client} client):",
        f"- with dynamic batching (max {settings.predict_batch_max_size} images, "
        f"max wait {settings.predict_batch_max_wait_ms:g} ms): {b['rate']:,.0f} requests/s, "
        f"p50 {b['p50']:.1f} ms, p99 {b['p99']:.1f} ms",
        f"- without batching: {u['rate']:,.0f} requests/s, p50 {u['p50']:.1f} ms, "
        f"p99 {u['p99']:.1f} ms",
        f"- throughput with batching / without: {b['rate'] / u['rate']:.2f}x overall; "
        f"median of the rounds' ratios {statistics.median(ratios):.2f}x "
        f"({', '.join(f'{r:.2f}' for r in ratios)})",
        f"- images per forward pass with batching ({len(batch_sizes)} passes in the "
        f"measured rounds): median {statistics.median(batch_sizes):g}, "
        f"mean {statistics.fmean(batch_sizes):.1f}, max {max(batch_sizes)}",
        f"- failed calls: {b['failures'] + u['failures']}",
    ])
    print(report)
    write_result(args.result, report)
    ctx.close()


if __name__ == "__main__":
    main()
