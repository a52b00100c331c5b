"""What fine-tuning and retraining share: one training run (``app.ml.training``'s loop,
the one that trains base models) on the data no version in the lineage forgot, with the
recipe the request's parameters give. They differ only in where the run starts: the
source weights (finetune) or a fresh network of the same architecture (retrain)."""

from __future__ import annotations

from typing import Protocol

from torch import nn

from app.ml.data import ImageData
from app.ml.training import TrainingRecipe, train_model
from app.unlearning.base import ForgetTarget, ProgressCallback


class TrainingParams(Protocol):
    """The parameters of a method that trains (each declares its own defaults and bounds)."""

    epochs: int
    lr: float
    batch_size: int
    seed: int


def train_on_retained(model: nn.Module, target: ForgetTarget, params: TrainingParams,
                      data: ImageData, progress: ProgressCallback, *,
                      from_scratch: bool) -> nn.Module:
    """Train on the retained images: ``model`` itself, or with ``from_scratch`` a fresh
    network of its spec seeded by ``params.seed`` (nothing of the source weights may leak
    into an exact retrain)."""
    retain = target.retain_mask(data)
    recipe = TrainingRecipe(seed=params.seed, epochs=params.epochs,
                            batch_size=params.batch_size, learning_rate=params.lr)
    start = {"spec": model.spec} if from_scratch else {"model": model}
    return train_model(data.train_images[retain], data.train_labels[retain], recipe,
                       device=next(model.parameters()).device, progress=progress, **start)
