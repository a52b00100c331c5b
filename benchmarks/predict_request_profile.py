"""Where one single-image ``/predict`` call's time goes, on the configured device.

Calls the app in process (httpx's ASGI transport, no sockets) one at a time and adds up
the wall time spent in each stage of the request: the API key check, the version lookup,
the supersession check, input decoding and the forward pass; "rest" is the framework,
middleware and response encoding. Batching can only save (part of) the forward pass, so
this bounds what it can gain while the other stages stay as they are.

    UNLEARN_DATA_DIR=../shared/data .venv/bin/python benchmarks/predict_request_profile.py
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import statistics
import time

import httpx
import numpy as np
import orjson
from _common import admin_headers, fresh_context, write_result

import app.auth.deps as auth_deps
import app.prediction.predictor as predictor_module
import app.api.routes.prediction as routes
import app.prediction.service as prediction_service
from app.main import create_app
from app.ml.device import describe_device

SPANS: dict[str, float] = collections.defaultdict(float)


def _timed(name: str, function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            SPANS[name] += time.perf_counter() - started
    return wrapper


def _instrument() -> None:
    """Wrap each stage where the route looks it up (module globals), before the app is made."""
    # The key, the production pointer, the version and its superseded/purged state are
    # read in one database session, which the route opens (its opening and commit fall
    # under "rest"); the supersession check then only judges the state read.
    auth_deps.authenticate_throttled = _timed("API key check",
                                              auth_deps.authenticate_throttled)
    routes.check_servable = _timed("supersession check (on the state read by the lookup)",
                                   routes.check_servable)
    predictor_module.Predictor._version_row = _timed(  # type: ignore[method-assign]
        "version lookup (production pointer and version state)",
        predictor_module.Predictor._version_row)
    routes.parse_predict_body = _timed("JSON parsing", routes.parse_predict_body)
    prediction_service.batch_from_instances = _timed("input checks and decoding",
                                                     prediction_service.batch_from_instances)
    predictor_module.forward_probabilities = _timed("forward pass (1 image)",
                                                    predictor_module.forward_probabilities)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=300, help="per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--result", default="predict_request_profile.md")
    args = parser.parse_args()

    _instrument()
    # Unbatched: a lone call through the batcher only adds its wait to the same stages.
    ctx = fresh_context(predict_batching=False)
    headers = {"content-type": "application/json", **admin_headers(ctx)}
    image = ctx.model_data(ctx.model_name).test_images[0, 0].numpy()
    body = orjson.dumps({"instances": [np.round(image, 4).tolist()]})
    app = create_app(ctx, start_worker=False)
    rounds: list[dict[str, float]] = []

    async def run() -> None:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://profile",
                headers=headers) as client:
            for _ in range(20):  # warm-up
                assert (await client.post("/predict", content=body)).status_code == 200
            for _ in range(args.rounds):
                SPANS.clear()
                started = time.perf_counter()
                for _ in range(args.calls):
                    await client.post("/predict", content=body)
                total = time.perf_counter() - started
                stages = {name: seconds / args.calls * 1000 for name, seconds in SPANS.items()}
                stages["rest: framework, middleware, response"] = (
                    total / args.calls * 1000 - sum(stages.values()))
                stages["total"] = total / args.calls * 1000
                rounds.append(stages)

    asyncio.run(run())
    medians = {name: statistics.median(r[name] for r in rounds) for name in rounds[0]}
    total = medians.pop("total")
    lines = [f"One single-image /predict call (JSON, in process, one call at a time), device: "
             f"{describe_device(ctx.device)}; median of {args.rounds} rounds of "
             f"{args.calls} calls: {total:.2f} ms a call",
             "", "| stage | ms a call | share |", "|---|---:|---:|"]
    for name, ms in sorted(medians.items(), key=lambda item: -item[1]):
        lines.append(f"| {name} | {ms:.2f} | {ms / total:.0%} |")
    forward = medians["forward pass (1 image)"]
    lines += ["", f"Most batching could gain while the other stages stay (a free forward "
                  f"pass): {total / (total - forward):.2f}x"]
    report = "\n".join(lines)
    print(report)
    write_result(args.result, report)
    ctx.close()


if __name__ == "__main__":
    main()
