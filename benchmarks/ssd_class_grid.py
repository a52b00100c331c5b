"""SSD on the shipped full-MNIST model, class 2: a sweep of (alpha, lambda) without
calibration, then one request with the defaults (calibrated), each judged by the service's
own acceptance criteria on the test split (class 2 test accuracy, retained accuracy drop).

This is how the calibration grid of ``app/unlearning/ssd.py`` was checked against the model
`make run` serves (docs/verification.md). Every request runs the service's way (filing,
execution with full before/after metrics, verification), in one process; [D] is computed
once and cached for the sweep.

    UNLEARN_DATA_DIR=../shared/data .venv/bin/python benchmarks/ssd_class_grid.py
    ... benchmarks/ssd_class_grid.py --alphas 2,1.9,1.8 --lambdas 0.1,0.05,0.01
"""

from __future__ import annotations

import argparse
import platform

from _common import fresh_context, run_request, write_result

from app.ml.device import describe_device


def _floats(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alphas", default="2,1.8,1.6", type=_floats)
    parser.add_argument("--lambdas", default="0.1,0.05,0.03,0.01", type=_floats)
    parser.add_argument("--skip-calibrated", action="store_true")
    parser.add_argument("--result", default="ssd_class_grid.md")
    args = parser.parse_args()
    ctx = fresh_context()
    lines = [f"SSD, class 2, shipped base model (full MNIST), device: "
             f"{describe_device(ctx.device)} ({platform.machine()}); "
             "class 2 test accuracy / retained test accuracy drop, by the default criteria:"]

    def report(label: str, params: dict) -> None:
        request, seconds = run_request(ctx, version=1, target={"classes": [2]},
                                       method="ssd", params=params)
        values = {c["name"]: c["value"] for c in request.verification["criteria"]}
        lines.append(f"- {label}: {request.status}, class 2 "
                     f"{values['forget_class_test_accuracy']:.2%}, retained drop "
                     f"{values['retained_test_accuracy_drop'] * 100:.2f} points ({seconds:.0f} s)")
        print(lines[-1], flush=True)

    for alpha in args.alphas:
        for lam in args.lambdas:
            report(f"alpha={alpha}, lambda={lam}, no calibration",
                   {"calibrate": False, "alpha": alpha, "lambda": lam})
    if not args.skip_calibrated:
        report("defaults (calibrated)", {})
    write_result(args.result, "\n".join(lines))


if __name__ == "__main__":
    main()
