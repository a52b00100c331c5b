"""Metric formulas on logits. Pure functions: no model, no database."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from app.ml.network import NUM_CLASSES


def set_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict | None:
    """Accuracy, mean cross-entropy, per-class accuracy and confusion matrix of one set.

    Returns None for an empty set. ``per_class_accuracy[k]`` is None when class k has no
    image in the set. ``confusion_matrix[i][j]`` counts images of true class i predicted j.
    """
    count = int(labels.shape[0])
    if count == 0:
        return None
    logits = logits.to(torch.float64)
    predictions = logits.argmax(dim=1)
    loss = float(F.cross_entropy(logits, labels, reduction="mean"))
    confusion = torch.zeros(NUM_CLASSES * NUM_CLASSES, dtype=torch.int64)
    confusion.index_add_(0, labels * NUM_CLASSES + predictions, torch.ones_like(labels))
    confusion = confusion.view(NUM_CLASSES, NUM_CLASSES)
    support = confusion.sum(dim=1)
    per_class = [
        (float(confusion[k, k]) / float(support[k])) if support[k] > 0 else None
        for k in range(NUM_CLASSES)
    ]
    correct = int(confusion.diagonal().sum())
    return {
        "count": count,
        "accuracy": correct / count,
        "loss": loss,
        "per_class_accuracy": per_class,
        "confusion_matrix": confusion.tolist(),
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
