"""The paper's ablation on demand: accuracy and loss against alpha for one version and one
class, as output dampening would leave them.

Dampening changes only the output layer, so every alpha shares the version's cached
penultimate features (computed once per backbone, then read from the evaluator's cache):
one pass of the output layer gives all logits, and since scaling the class's weight row
and bias by alpha scales exactly that class's logit by alpha, each point is a column
rescale and a metric pass, milliseconds each.
"""

from __future__ import annotations

import math

import torch

from app.core.context import ServiceContext
from app.core.errors import InvalidInputError
from app.evaluation.metrics import forgetting_efficiency, retention_score, set_metrics
from app.evaluation.service import NAMED_SETS, named_set_masks
from app.ml.network import NUM_CLASSES
from app.registry.models import ModelVersion
from app.unlearning.base import ForgetTarget

DEFAULT_ALPHAS = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001)
MAX_ALPHAS = 25


def parse_alphas(text: str | None) -> tuple[float, ...]:
    """'1, 0.1, 0.01' -> (1.0, 0.1, 0.01), each in (0, 1], at most MAX_ALPHAS of them."""
    if text is None or not text.strip():
        return DEFAULT_ALPHAS
    values = []
    for part in text.replace(";", ",").replace(" ", ",").split(","):
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise InvalidInputError(f"alphas: {part!r} is not a number", "alphas") from None
        if not math.isfinite(value) or not 0.0 < value <= 1.0:
            raise InvalidInputError(f"alphas: {part} is outside (0, 1]", "alphas")
        values.append(value)
    if not values:
        raise InvalidInputError("alphas: give at least one value", "alphas")
    if len(values) > MAX_ALPHAS:
        raise InvalidInputError(f"alphas: at most {MAX_ALPHAS} values", "alphas")
    return tuple(sorted(set(values), reverse=True))


@torch.inference_mode()
def alpha_sweep(ctx: ServiceContext, version: ModelVersion, forgotten_class: int,
                alphas: tuple[float, ...]) -> list[dict]:
    if not 0 <= forgotten_class < NUM_CLASSES:
        raise InvalidInputError(f"class: {forgotten_class} is outside 0-9", "class")
    data = ctx.data.get()
    model = ctx.models.get(version)
    train_logits, test_logits = ctx.evaluator.logits(model, version.backbone_sha256, data)
    masks = named_set_masks(data, ForgetTarget(classes=(forgotten_class,)))
    # Each named set's logits, cut out once; every alpha then rescales one column.
    sets = {}
    for name in NAMED_SETS:
        logits, labels = ((test_logits, data.test_labels) if name.startswith("test")
                          else (train_logits, data.train_labels))
        sets[name] = (logits[masks[name]].to(torch.float64), labels[masks[name]])
    rows = []
    for alpha in alphas:
        row: dict = {"alpha": alpha}
        for name, (logits, labels) in sets.items():
            # Scaling the class's weight row and bias by alpha scales its logit by alpha.
            scaled = logits.clone()
            scaled[:, forgotten_class] *= alpha
            metrics = set_metrics(scaled, labels)
            row[name] = None if metrics is None else {
                "accuracy": metrics["accuracy"], "loss": metrics["loss"],
                "count": metrics["count"],
            }
        forget, retain = row["forget"], row["retain"]
        row["forgetting_efficiency"] = (
            forgetting_efficiency(forget["accuracy"], forget["loss"]) if forget else None)
        row["retention_score"] = (
            retention_score(retain["accuracy"], retain["loss"]) if retain else None)
        rows.append(row)
    return rows
