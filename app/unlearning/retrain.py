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
from app.ml.training import TrainingRecipe, train_model
from app.unlearning.base import (
    ForgetTarget,
    MethodParams,
    ProgressCallback,
    UnlearningMethod,
)

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
        retain = target.retain_mask(data)
        recipe = TrainingRecipe(seed=params.seed, epochs=params.epochs,
                                batch_size=params.batch_size, learning_rate=params.lr)
        device = next(model.parameters()).device
        # The source weights are ignored on purpose: nothing of them may leak into the result.
        return train_model(data.train_images[retain], data.train_labels[retain], recipe,
                           device=device, progress=progress, spec=model.spec)


METHOD = Retrain()
