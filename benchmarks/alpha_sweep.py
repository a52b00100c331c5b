"""Reproduce the paper's table: forget class 2 by output dampening for several alphas.

Protocol of the paper: forget = a seeded random 10% of class 2's training images,
retain = every other training image (so 90% of class 2 stays in "retain"). Beside it,
the service's own named sets: forget = all training images of class 2, retain = the
other classes' training images, and the test images of class 2 / of the others.

    UNLEARN_DATA_DIR=../shared/data .venv/bin/python benchmarks/alpha_sweep.py

Writes benchmarks/results/alpha_sweep.md and alpha_sweep.png.
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
from _common import RESULTS, base_version, fresh_context, write_result

from app.evaluation.metrics import outcome_metrics, paper_scores
from app.evaluation.service import named_set_masks
from app.unlearning.base import ForgetTarget
from app.unlearning.output_dampening import dampen_output_layer

PAPER = {1.0: (0.932, 0.981, 0.21, 0.06), 0.3: (0.543, 0.978, 0.83, 0.07),
         0.01: (0.121, 0.973, 1.78, 0.08)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--forget-class", type=int, default=2)
    parser.add_argument("--alphas", type=float, nargs="+", default=[1.0, 0.3, 0.1, 0.01, 0.001])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    ctx = fresh_context()
    data = ctx.model_data(ctx.model_name)
    base = base_version(ctx)
    model = ctx.models.get(base)
    f = args.forget_class

    # The paper's forget set: a seeded random 10% of class f's training images.
    rng = np.random.default_rng(args.seed)
    class_positions = np.flatnonzero(data.train_labels.numpy() == f)
    paper_forget = np.zeros(data.num_train, dtype=bool)
    paper_forget[rng.choice(class_positions, size=len(class_positions) // 10, replace=False)] = True
    ours = named_set_masks(data, ForgetTarget(classes=(f,)))

    rows = []
    for alpha in args.alphas:
        dampened = dampen_output_layer(copy.deepcopy(model), (f,), alpha)
        outcomes = ctx.evaluator.outcomes(dampened, base.backbone_sha256, data)
        paper_f = outcome_metrics(outcomes.train, paper_forget)
        paper_r = outcome_metrics(outcomes.train, ~paper_forget)
        named = {name: outcome_metrics(outcomes.test if name.startswith("test") else outcomes.train,
                                       mask) for name, mask in ours.items()}
        scores = paper_scores(paper_f, paper_r)
        rows.append({
            "alpha": alpha,
            "paper": (paper_f["accuracy"], paper_r["accuracy"], paper_f["loss"], paper_r["loss"]),
            "fe": scores["forgetting_efficiency"], "rs": scores["retention_score"],
            "named": {k: (v["accuracy"], v["loss"]) for k, v in named.items()},
        })

    lines = [
        f"Output dampening of class {f} on the shipped base model (full MNIST; seed {args.seed}).",
        "",
        "Paper's protocol (forget = random 10% of class 2's training images; retain = all other "
        "training images) and the paper's reported figures in brackets:",
        "",
        "| α | forget acc | retain acc | forget loss | retain loss | FE | RS |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        fa, ra, fl, rl = row["paper"]
        paper = PAPER.get(row["alpha"])
        cite = (lambda i: f" ({paper[i]})") if paper else (lambda i: "")
        fe = f"{row['fe']:.2f}" if row["fe"] is not None else "—"
        rs = f"{row['rs']:.1f}" if row["rs"] is not None else "—"
        lines.append(f"| {row['alpha']:g} | {fa:.3f}{cite(0)} | {ra:.3f}{cite(1)} | "
                     f"{fl:.2f}{cite(2)} | {rl:.2f}{cite(3)} | {fe} | {rs} |")
    lines += [
        "",
        "The service's named sets (forget = all of class 2's training images; retain = the "
        "other classes; test sets split the same way), accuracy / loss:",
        "",
        "| α | forget | retain | test_forget | test_retain |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        cells = " | ".join(f"{a:.3f} / {l:.2f}" for a, l in
                           (row["named"][k] for k in ("forget", "retain", "test_forget",
                                                      "test_retain")))
        lines.append(f"| {row['alpha']:g} | {cells} |")
    table = "\n".join(lines)
    print(table)
    write_result("alpha_sweep.md", table)
    _plot(rows, f)
    ctx.close()


def _plot(rows: list[dict], f: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    alphas = [row["alpha"] for row in rows]
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("forget", f"forget (all class {f})"), ("retain", "retain"),
                       ("test_forget", f"test class {f}"), ("test_retain", "test others")):
        acc_ax.plot(alphas, [row["named"][key][0] for row in rows], marker="o", label=label)
        loss_ax.plot(alphas, [row["named"][key][1] for row in rows], marker="o", label=label)
    acc_ax.plot(alphas, [row["paper"][0] for row in rows], "k--", marker="x",
                label="paper protocol: forget 10%")
    for ax, name in ((acc_ax, "accuracy"), (loss_ax, "mean cross-entropy")):
        ax.set_xscale("log")
        ax.set_xlabel("α (dampening factor)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    acc_ax.legend(fontsize=8)
    fig.suptitle(f"Output dampening of class {f}: accuracy and loss against α")
    fig.tight_layout()
    fig.savefig(RESULTS / "alpha_sweep.png", dpi=110)


if __name__ == "__main__":
    main()
