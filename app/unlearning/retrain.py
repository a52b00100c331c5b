"""Exact unlearning by retraining: a fresh network trained from scratch on the retained
data (this request's forget set and everything the lineage forgot before are left out),
with the base model's recipe (``TrainingRecipe``'s defaults: Adam, 2 epochs, batch 64,
lr 2e-3 decaying linearly). The gold standard every other method is compared with, and
the slowest: a full training run (about 45 s on 2 CPU cores). Progress is written to the
request while it trains.
"""

from __future__ import annotations

from pydantic import Field
from torch import nn

from app.ml.data import ImageData
from app.ml.training import TrainingRecipe
from app.unlearning.base import (
    ForgetTarget,
    MethodParams,
    ProgressCallback,
    UnlearningMethod,
)
from app.unlearning.retained_training import train_on_retained

BASE_RECIPE = TrainingRecipe()


class RetrainParams(MethodParams):
    epochs: int = Field(default=BASE_RECIPE.epochs, ge=1, le=50)
    batch_size: int = Field(default=BASE_RECIPE.batch_size, ge=1, le=4096)
    lr: float = Field(default=BASE_RECIPE.learning_rate, gt=0.0, le=1.0, allow_inf_nan=False)
    seed: int = Field(default=BASE_RECIPE.seed, ge=0)


class Retrain(UnlearningMethod):
    name = "retrain"
    exact = True
    description = "Exact unlearning: train a new network from scratch on the retained data."
    Params = RetrainParams

    def forget(self, model: nn.Module, target: ForgetTarget, params: MethodParams,
               data: ImageData, progress: ProgressCallback) -> nn.Module:
        assert isinstance(params, RetrainParams)
        return train_on_retained(model, target, params, data, progress, from_scratch=True)


METHOD = Retrain()
