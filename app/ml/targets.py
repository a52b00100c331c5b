"""What a forget request targets: whole classes and/or training samples by official ID,
as masks over a dataset. The unlearning methods act on it (``app.unlearning.base``); the
evaluation measures the forget and retain sets it defines (``app.evaluation``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from app.ml.data import ImageData


@dataclass(frozen=True)
class ForgetTarget:
    """What to forget: whole classes, and/or individual training samples by official ID."""

    classes: tuple[int, ...] = ()
    sample_ids: tuple[int, ...] = field(default=())
    # What the source version's ancestors already forgot. Methods that train on "the
    # retained data" (finetune, retrain, fisher) must leave these out too, or a child
    # version would relearn what its parent had erased.
    prior_classes: tuple[int, ...] = ()
    prior_sample_ids: tuple[int, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.classes and not self.sample_ids

    def forget_mask(self, data: ImageData) -> torch.Tensor:
        """Training images this request targets: every image of a class, plus listed IDs."""
        return _membership(data, self.classes, self.sample_ids)

    def held_mask(self, data: ImageData) -> torch.Tensor:
        """Training images the source version still holds: all but what its lineage forgot
        (this request's target included)."""
        return ~_membership(data, self.prior_classes, self.prior_sample_ids)

    def retain_mask(self, data: ImageData) -> torch.Tensor:
        """Training images no version in the lineage (this request included) forgot."""
        prior = _membership(data, self.prior_classes, self.prior_sample_ids)
        return ~(self.forget_mask(data) | prior)


def class_mask(labels: torch.Tensor, classes) -> np.ndarray:
    """Images whose label is one of ``classes`` (a per-class lookup table, not ``isin``:
    this runs on every forget request, before and after, over 60,000 labels)."""
    label_array = labels.numpy()
    classes = list(classes)
    size = max([int(label_array.max()) + 1 if label_array.size else 0,
                *(c + 1 for c in classes)])
    is_listed = np.zeros(size, dtype=bool)
    is_listed[classes] = True
    return is_listed[label_array]


def _membership(data: ImageData, classes, sample_ids) -> torch.Tensor:
    mask = class_mask(data.train_labels, classes)
    if sample_ids:
        mask |= np.isin(data.train_ids.numpy(), np.asarray(sorted(sample_ids), dtype=np.int64))
    return torch.from_numpy(mask)
