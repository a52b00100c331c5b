"""Wall time of a class forget request for every method against retraining, on one device.

Every request takes the service's own path (filing, claim, execution with full
before/after metrics over all images, publication; no HTTP) against the shipped base
model on full MNIST, on the configured device (UNLEARN_DEVICE; the report names it).
Each method runs ``--repeats`` times: the first ("cold") pays its caches (SSD's full-data
importances, the penultimate features of a new backbone...), the rest are "warm". SISA
first trains its ensemble (reported apart) and forgets from that version. The ratio
that matters is retrain's time over the method's cold time.

    UNLEARN_DATA_DIR=../shared/data .venv/bin/python benchmarks/method_speed.py
"""

from __future__ import annotations

import argparse
import statistics
import time

from _common import fresh_context, run_request, write_result
from compare_methods import method_params

from app.ml.device import describe_device
from app.ml.sisa import SisaRecipe, train_sisa
from app.registration import register_trained_model

METHODS = ("retrain", "output_dampening", "ssd", "fisher", "finetune", "sisa")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sisa-shards", type=int, default=5)
    parser.add_argument("--sisa-slices", type=int, default=3)
    parser.add_argument("--fisher-samples", type=int, default=None,
                        help="Fisher's retained-image subsample (default: the method's 1000)")
    parser.add_argument("--result", default="method_speed.md")
    args = parser.parse_args()

    ctx = fresh_context()
    data = ctx.model_data(ctx.model_name)
    target = {"classes": [2], "sample_ids": []}
    versions = {method: 1 for method in args.methods}
    notes = []
    if "sisa" in args.methods:
        recipe = SisaRecipe(shards=args.sisa_shards, slices=args.sisa_slices)
        started = time.perf_counter()
        ensemble = train_sisa(data, recipe, ctx.device)
        trained = time.perf_counter() - started
        row = register_trained_model(ctx, ensemble, model_card={"kind": "sisa"},
                                     actor="benchmark", method="train-sisa",
                                     params=recipe.to_dict())
        versions["sisa"] = row.version
        notes.append(f"- SISA ensemble ({args.sisa_shards} shards x {args.sisa_slices} "
                     f"slices) trained once beforehand in {trained:.1f} s")
    timings: dict[str, list[float]] = {}
    for method in args.methods:
        timings[method] = []
        for repeat in range(args.repeats if method != "retrain" else 1):
            params = method_params(method, seed=repeat)
            if method == "fisher" and args.fisher_samples:
                params["fisher_samples"] = args.fisher_samples
            _, elapsed = run_request(ctx, version=versions[method], target=target,
                                     method=method, params=params)
            timings[method].append(elapsed)
            print(f"{method}: {elapsed:.3f} s", flush=True)
    retrain = timings.get("retrain", [None])[0]
    lines = [
        f"Class forget request (class 2, full MNIST, full before/after metrics, service path "
        f"without HTTP) per method, device: {describe_device(ctx.device)}:",
        "",
        "| method | cold s | warm s (median) | retrain / cold |",
        "|---|---:|---:|---:|",
    ]
    for method, values in timings.items():
        cold = values[0]
        warm = statistics.median(values[1:]) if len(values) > 1 else None
        ratio = f"{retrain / cold:.1f}x" if retrain else "-"
        lines.append(f"| {method} | {cold:.3f} | "
                     f"{'-' if warm is None else f'{warm:.3f}'} | {ratio} |")
    if retrain:
        slower = [m for m, v in timings.items() if m != "retrain" and v[0] >= retrain]
        lines += ["", "- every approximate method is faster than retraining (cold)"
                  if not slower else f"- NOT faster than retraining (cold): {', '.join(slower)}"]
    lines += notes
    report = "\n".join(lines)
    print(report)
    write_result(args.result, report)
    ctx.close()


if __name__ == "__main__":
    main()
