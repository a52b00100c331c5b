"""Metric formulas. Pure functions: no model, no database.

Metrics of a set are reductions over per-image outcomes (predicted class and
cross-entropy), so the outcomes of all 70,000 images are computed once per model and
every named set is a masked reduction of them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Outcomes:
    """Per-image results of a model on a set of images, as NumPy arrays: the reductions
    below are tiny and single-threaded NumPy runs them without thread-pool overhead."""

    labels: np.ndarray  # int64 [N], true classes
    predicted: np.ndarray  # int64 [N]
    loss: np.ndarray  # float64 [N], cross-entropy of each image
    num_classes: int = 10

    @classmethod
    def from_logits(cls, logits: torch.Tensor, labels: torch.Tensor) -> "Outcomes":
        logits = logits.detach().to(torch.float64)  # float64: stable means over 60k images
        return cls(labels=labels.numpy(), predicted=logits.argmax(dim=1).numpy(),
                   loss=F.cross_entropy(logits, labels, reduction="none").numpy(),
                   num_classes=int(logits.shape[1]))

class SetMetrics(TypedDict):
    """A model's figures on one set of images (JSON-ready: stored and served as is)."""

    count: int
    accuracy: float
    loss: float
    per_class_accuracy: list[float | None]
    confusion_matrix: list[list[int]]


class VersionMetrics(TypedDict):
    """What a version row records: its figures on the test split."""

    test: SetMetrics | None


class RequestMetrics(TypedDict):
    """A forget request's figures, before or after: the four named sets (None where a set
    is empty), the paper's two scores (None where undefined) and the membership-inference
    figures."""

    forget: SetMetrics | None
    retain: SetMetrics | None
    test_forget: SetMetrics | None
    test_retain: SetMetrics | None
    forgetting_efficiency: float | None
    retention_score: float | None
    membership_inference: dict[str, Any]


def outcome_metrics(outcomes: Outcomes, mask: np.ndarray | None = None) -> SetMetrics | None:
    """Accuracy, mean cross-entropy, per-class accuracy and confusion matrix of the images
    selected by ``mask`` (all when None).

    Returns None for an empty set. ``per_class_accuracy[k]`` is None when class k has no
    image in the set. ``confusion_matrix[i][j]`` counts images of true class i predicted j.
    Masks are applied as weights rather than by indexing: dense reductions over 60,000
    images take microseconds, boolean indexing milliseconds.
    """
    weights = np.ones_like(outcomes.loss) if mask is None else mask.astype(np.float64)
    count = int(weights.sum())
    if count == 0:
        return None
    k = outcomes.num_classes
    confusion = np.bincount(outcomes.labels * k + outcomes.predicted,
                            weights=weights, minlength=k * k)
    confusion = confusion.round().astype(np.int64).reshape(k, k)
    support = confusion.sum(axis=1).tolist()
    diagonal = confusion.diagonal().tolist()
    return {
        "count": count,
        "accuracy": sum(diagonal) / count,
        "loss": float(np.dot(outcomes.loss, weights) / count),
        "per_class_accuracy": [d / s if s else None for d, s in zip(diagonal, support)],
        "confusion_matrix": confusion.tolist(),
    }


def set_metrics(logits: torch.Tensor, labels: torch.Tensor) -> SetMetrics | None:
    """``outcome_metrics`` straight from logits."""
    return outcome_metrics(Outcomes.from_logits(logits, labels))


def paper_scores(forget: Mapping[str, Any] | None,
                 retain: Mapping[str, Any] | None) -> dict[str, float | None]:
    """The paper's two scores from the forget and retain sets' metrics (each a dict with
    ``accuracy`` and ``loss``, or None for an empty set): the one place every caller
    (request metrics, the console's α sweep, the benchmark) computes them."""
    return {
        "forgetting_efficiency": (forgetting_efficiency(forget["accuracy"], forget["loss"])
                                  if forget else None),
        "retention_score": (retention_score(retain["accuracy"], retain["loss"])
                            if retain else None),
    }


def forgetting_efficiency(forget_accuracy: float, forget_loss: float) -> float | None:
    """The paper's (1 - forget acc) / forget loss; None where the loss is zero."""
    return _guarded_ratio(1.0 - forget_accuracy, forget_loss)


def retention_score(retain_accuracy: float, retain_loss: float) -> float | None:
    """The paper's retain acc / retain loss; None where the loss is zero."""
    return _guarded_ratio(retain_accuracy, retain_loss)


def _guarded_ratio(numerator: float, denominator: float) -> float | None:
    # A zero (or denormal) loss would make the ratio infinite: JSON has no infinity, and an
    # "infinitely good" score would mislead, so the score is reported as undefined.
    if not math.isfinite(denominator) or denominator <= 1e-12:
        return None
    return numerator / denominator
