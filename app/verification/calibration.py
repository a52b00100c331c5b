"""The validation check a calibrating method (SSD) runs on each candidate.

It reads only training data the source version still holds: a seeded sample of the forget
set's class images (for class targets), the forgotten sample IDs themselves (for the
per-sample membership test, when the lineage has a shadow bank), and a seeded sample of the
retained images. It never reads the test split: the acceptance criteria are reported on
the test split, and a parameter search that looked at it would grade its own homework.

The criteria are the request's own thresholds, applied to these validation images:
forgotten-class accuracy <= forget_accuracy_max, retained accuracy within retain_drop_max
of the source's on the same images, and no more forgotten samples flagged by the
membership test than chance allows.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from torch import nn

from app.ml.data import ImageData
from app.ml.targets import ForgetTarget, class_mask
from app.verification.lira import (
    ShadowStatistics,
    allowed_flagged,
    flag_threshold,
    logit_confidence_from_loss,
    z_scores,
)

VALIDATION_FORGET_IMAGES = 1_000
VALIDATION_RETAIN_IMAGES = 2_000


@torch.inference_mode()
def _predict(model: nn.Module, images: torch.Tensor, labels: torch.Tensor
             ) -> tuple[np.ndarray, np.ndarray]:
    """(correct, loss) per image."""
    model = model.eval()
    device = next(model.parameters()).device
    correct, losses = [], []
    for start in range(0, len(labels), 2048):
        logits = model(images[start:start + 2048].to(device)).cpu().to(torch.float64)
        y = labels[start:start + 2048]
        correct.append((logits.argmax(1) == y).numpy())
        losses.append(torch.nn.functional.cross_entropy(logits, y, reduction="none").numpy())
    if not correct:
        return np.zeros(0, bool), np.zeros(0)
    return np.concatenate(correct), np.concatenate(losses)


def _pick(positions: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    if len(positions) <= size:
        return positions
    return np.sort(rng.choice(positions, size=size, replace=False))


class ValidationCheck:
    """Scores candidate models against the acceptance thresholds on held training data."""

    def __init__(self, source_model: nn.Module, data: ImageData, target: ForgetTarget,
                 acceptance: dict[str, Any], shadows: ShadowStatistics | None, seed: int = 0):
        self.data = data
        self.acceptance = acceptance
        self.shadows = shadows
        rng = np.random.default_rng(seed)
        retain = np.flatnonzero(target.retain_mask(data).numpy())
        self.retain_positions = _pick(retain, VALIDATION_RETAIN_IMAGES, rng)
        if target.classes and "forget_accuracy_max" in acceptance:
            forgotten_class = np.flatnonzero(class_mask(data.train_labels, target.classes))
            self.class_positions = _pick(forgotten_class, VALIDATION_FORGET_IMAGES, rng)
        else:
            self.class_positions = np.zeros(0, dtype=np.int64)
        if target.sample_ids and "membership_fpr" in acceptance:
            self.sample_positions = data.train_positions(np.asarray(target.sample_ids))
        else:
            self.sample_positions = np.zeros(0, dtype=np.int64)
        self.membership_available = shadows is not None and len(self.sample_positions) > 0
        self.source_retain_accuracy = float(self._correct(source_model,
                                                          self.retain_positions)[0].mean())

    @property
    def validation_positions(self) -> np.ndarray:
        """Every training position the check reads (tests assert it never reads more)."""
        return np.unique(np.concatenate([self.retain_positions, self.class_positions,
                                         self.sample_positions]))

    def _correct(self, model: nn.Module, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        index = torch.from_numpy(positions.astype(np.int64))
        return _predict(model, self.data.train_images[index], self.data.train_labels[index])

    def evaluate(self, model: nn.Module) -> dict[str, Any]:
        values: dict[str, Any] = {}
        failed = []
        retain_accuracy = float(self._correct(model, self.retain_positions)[0].mean())
        drop = self.source_retain_accuracy - retain_accuracy
        values["retained_accuracy_drop"] = round(drop, 4)
        retain_ok = round(drop, 9) <= self.acceptance["retain_drop_max"]
        if not retain_ok:
            failed.append("retained_accuracy_drop")
        forget_score = 0.0
        if len(self.class_positions):
            accuracy = float(self._correct(model, self.class_positions)[0].mean())
            values["forget_class_accuracy"] = round(accuracy, 4)
            forget_score += accuracy
            if accuracy > self.acceptance["forget_accuracy_max"]:
                failed.append("forget_class_accuracy")
        if self.membership_available:
            assert self.shadows is not None  # membership_available says so
            _, loss = self._correct(model, self.sample_positions)
            phi = np.zeros(self.data.num_train)
            phi[self.sample_positions] = logit_confidence_from_loss(loss)
            z = z_scores(self.shadows, phi, self.sample_positions)
            tested = z[~np.isnan(z)]
            fpr = self.acceptance["membership_fpr"]
            flagged = int((tested > flag_threshold(fpr)).sum())
            allowed = allowed_flagged(len(tested), fpr, self.acceptance["membership_significance"])
            values["membership_flagged"] = flagged
            values["membership_allowed"] = allowed
            forget_score += flagged / max(1, len(tested))
            if flagged > allowed:
                failed.append("membership_flagged")
        return {"passed": not failed, "retain_ok": retain_ok, "forget_score": forget_score,
                "values": values, "failed": failed}

    def describe(self) -> dict[str, Any]:
        ids = self.data.train_ids.numpy()[self.validation_positions]
        return {
            "split": "training images the source version still holds (never the test split)",
            "retained_images": int(len(self.retain_positions)),
            "forgotten_class_images": int(len(self.class_positions)),
            "forgotten_samples_membership_tested": int(len(self.sample_positions))
            if self.membership_available else 0,
            "membership_test": "used" if self.membership_available else (
                "not available (no shadow bank)" if len(self.sample_positions) else
                "not applicable"),
            "source_retained_accuracy": round(self.source_retain_accuracy, 4),
            "sample_ids_sha256": hashlib.sha256(np.sort(ids).astype(np.int64).tobytes()).hexdigest(),
        }
