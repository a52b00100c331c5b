"""The interface every unlearning method implements.

``forget(model, target, params, data, progress) -> model`` receives a private copy of the
source model (it may modify it in place) and returns the model to publish. ``params`` is
the method's own pydantic model, already validated, so each method declares and checks its
parameters in one place and the request shape stays the same for all methods.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from app.ml.data import ImageData

ProgressCallback = Callable[[float], None]

HEAVY_QUEUE = "heavy"
LIGHT_QUEUE = "light"


def enter_phase(progress: ProgressCallback, name: str) -> None:
    """Announce a new phase ('importance', 'dampening', 'training epoch 2/3') to a progress
    callback that tracks phases (the executor's); a plain fraction callback ignores it.
    After this, the fractions passed to ``progress`` are fractions of this phase."""
    phase = getattr(progress, "phase", None)
    if phase is not None:
        phase(name)


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


class MethodParams(BaseModel):
    """Base for each method's parameters: unknown keys are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class UnlearningMethod:
    """Subclasses set the class attributes and implement ``forget``."""

    name: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type[MethodParams]]
    supports_classes: ClassVar[bool] = True
    supports_samples: ClassVar[bool] = True
    # False when only the output layer changes: metrics may reuse cached penultimate features.
    changes_backbone: ClassVar[bool] = True
    # Model kinds (registry ``kind``) the method can work on.
    model_kinds: ClassVar[tuple[str, ...]] = ("cnn",)
    # Job queue by resource: 'heavy' for a pass over the data (GPU-worthy), 'light' for
    # output-layer-only work that a small CPU worker finishes in milliseconds.
    queue: ClassVar[str] = HEAVY_QUEUE

    # True for methods that retrain from scratch without the data (marked on certificates).
    exact: ClassVar[bool] = False
    # True for methods that search their own parameters against the acceptance criteria
    # (``forget`` then takes a ``check``, see ``app.verification.calibration``).
    calibrates: ClassVar[bool] = False

    def forget(self, model: nn.Module, target: ForgetTarget, params: MethodParams,
               data: ImageData, progress: ProgressCallback) -> nn.Module:
        raise NotImplementedError

    def check_request(self, params: MethodParams, target: ForgetTarget, data: ImageData) -> None:
        """Refuse, at filing time, parameters that cannot work on this target (raise
        ``InvalidInputError``); most methods have nothing to check."""
