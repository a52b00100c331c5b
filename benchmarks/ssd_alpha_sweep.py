"""How SSD's alpha (selection threshold) and lambda (dampening constant) trade forgetting
against retention on MNIST.

The comparison benchmark runs SSD with the paper's defaults (alpha = 10, lambda = 1),
which were tuned for ResNets on CIFAR. This sweep varies both on the shipped base model,
for two targets: all of class 2, and 600 random training images. [D] is computed once
(full training set, cached under var/cache/importances) and reused; each setting is one
dampening and one forward pass over all 70,000 images.

    UNLEARN_DATA_DIR=../shared/data .venv/bin/python benchmarks/ssd_alpha_sweep.py

Writes benchmarks/results/ssd_alpha_sweep.md.
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch
from _common import base_version, fresh_context, write_result

from app.unlearning.base import ForgetTarget
from app.unlearning.ssd import (
    ImportanceCache,
    SsdParams,
    compute_importances,
    dampen,
    full_data_importances,
)


@torch.inference_mode()
def accuracy(model, images, labels, mask) -> float:
    if not mask.any():
        return float("nan")
    correct = 0
    selected_images, selected_labels = images[mask], labels[mask]
    for start in range(0, len(selected_labels), 4096):
        logits = model(selected_images[start : start + 4096])
        correct += int((logits.argmax(1) == selected_labels[start : start + 4096]).sum())
    return correct / len(selected_labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", nargs="+",
                        default=["10:1", "5:1", "3:1", "2:1", "1.5:1", "10:0.1", "5:0.1",
                                 "10:0.01", "5:0.01"],
                        help="alpha:lambda pairs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    ctx = fresh_context()
    data = ctx.model_data(ctx.model_name)
    base = base_version(ctx)
    model = copy.deepcopy(ctx.models.get(base))
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    params = SsdParams()
    cache = ImportanceCache(ctx.settings.cache_dir / "importances")
    full = full_data_importances(model, data, params, cache)

    rng = np.random.default_rng(args.seed)
    random_ids = tuple(int(i) for i in rng.choice(data.num_train, size=600, replace=False))
    targets = {"class 2": ForgetTarget(classes=(2,)),
               "600 random images": ForgetTarget(sample_ids=random_ids)}
    lines = [
        "SSD on the shipped base model, by selection threshold α and dampening constant λ. "
        "Accuracies in %.",
        "",
        "| target | α | λ | forget | retain | test (forgotten class) | test (others) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, target in targets.items():
        forget_mask = target.forget_mask(data)
        forget_importance = compute_importances(model, data.train_images[forget_mask],
                                                data.train_labels[forget_mask], params.batch_size)
        test_forget = torch.isin(data.test_labels, torch.tensor(list(target.classes) or [-1]))
        rows = [("— | — (base)", model)]
        for setting in args.settings:
            alpha, lam = (float(part) for part in setting.split(":"))
            dampened = copy.deepcopy(model)
            dampen(dampened, full, forget_importance, alpha, lam)
            rows.append((f"{alpha:g} | {lam:g}", dampened))
        for label, candidate in rows:
            candidate.eval()
            figures = [
                accuracy(candidate, data.train_images, data.train_labels, forget_mask),
                accuracy(candidate, data.train_images, data.train_labels, ~forget_mask),
                accuracy(candidate, data.test_images, data.test_labels, test_forget),
                accuracy(candidate, data.test_images, data.test_labels, ~test_forget),
            ]
            cells = " | ".join("—" if np.isnan(v) else f"{100 * v:.2f}" for v in figures)
            line = f"| {name} | {label} | {cells} |"
            print(line, flush=True)
            lines.append(line)
    write_result("ssd_alpha_sweep.md", "\n".join(lines))
    ctx.close()


if __name__ == "__main__":
    main()
