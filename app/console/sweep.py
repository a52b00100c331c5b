"""The paper's ablation on demand: accuracy and loss against alpha for one version and one
class, as output dampening would leave them.

Dampening changes only the output layer, so every alpha shares the version's cached
penultimate features (computed once per backbone, then read from the evaluator's cache):
one pass of the output layer gives all 70,000 logits, and since scaling the class's
weight row and bias by alpha scales exactly that class's logit by alpha, each point is a
column rescale and the evaluator's masked reductions.
"""

from __future__ import annotations

import math

import torch

from app.architectures.base import ImageClassifier
from app.context import ServiceContext
from app.core.errors import InvalidInputError
from app.evaluation.metrics import Outcomes, outcome_metrics, paper_scores
from app.evaluation.service import NAMED_SETS, named_set_masks
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
    data = ctx.model_data(version.model_name)
    if not 0 <= forgotten_class < data.num_classes:
        raise InvalidInputError(
            f"class: {forgotten_class} is outside 0-{data.num_classes - 1}", "class")
    model = ctx.models.get(version)
    if not isinstance(model, ImageClassifier):  # a SISA ensemble: no single output layer
        raise InvalidInputError(
            f"version: {version.version} is of kind {version.kind!r}; the alpha sweep "
            f"rescales one output layer, which only a single network has", "version")
    features = ctx.evaluator.feature_cache.get(version.backbone_sha256, model, data, ctx.device)
    layer = model.output_layer
    weight, bias = layer.weight.detach().cpu(), layer.bias.detach().cpu()
    logits = {
        "train": (torch.addmm(bias, features.train, weight.T).to(torch.float64),
                  data.train_labels),
        "test": (torch.addmm(bias, features.test, weight.T).to(torch.float64),
                 data.test_labels),
    }
    masks = named_set_masks(data, ForgetTarget(classes=(forgotten_class,)))
    rows = []
    for alpha in alphas:
        outcomes = {}
        for part, (part_logits, labels) in logits.items():
            # Scaling the class's weight row and bias by alpha scales its logit by alpha.
            scaled = part_logits.clone()
            scaled[:, forgotten_class] *= alpha
            outcomes[part] = Outcomes.from_logits(scaled, labels)
        row: dict = {"alpha": alpha}
        for name in NAMED_SETS:
            metrics = outcome_metrics(outcomes["test" if name.startswith("test") else "train"],
                                      masks[name])
            row[name] = None if metrics is None else {
                "accuracy": metrics["accuracy"], "loss": metrics["loss"],
                "count": metrics["count"],
            }
        row.update(paper_scores(row["forget"], row["retain"]))
        rows.append(row)
    return rows
