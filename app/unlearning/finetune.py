"""Fine-tuning: continue training the source version on the retained data only.

The forget set is simply never shown again; what the network knew of it fades as the
weights move to fit the rest ("catastrophic forgetting" used on purpose). Cheap and
approximate: nothing guarantees the forgotten data's influence is gone.
"""

from __future__ import annotations

from pydantic import Field
from torch import nn

from app.ml.data import ImageData
from app.unlearning.base import (
    ForgetTarget,
    MethodParams,
    ProgressCallback,
    UnlearningMethod,
)
from app.unlearning.retained_training import train_on_retained


class FinetuneParams(MethodParams):
    epochs: int = Field(default=1, ge=1, le=20, description="Passes over the retained data.")
    lr: float = Field(default=1e-3, gt=0.0, le=1.0, allow_inf_nan=False,
                      description="Adam learning rate (decays linearly to zero).")
    batch_size: int = Field(default=64, ge=1, le=4096)
    seed: int = Field(default=0, ge=0)


class Finetune(UnlearningMethod):
    name = "finetune"
    description = "Fine-tune the source version on the retained training data for a few epochs."
    Params = FinetuneParams

    def forget(self, model: nn.Module, target: ForgetTarget, params: MethodParams,
               data: ImageData, progress: ProgressCallback) -> nn.Module:
        assert isinstance(params, FinetuneParams)
        return train_on_retained(model, target, params, data, progress, from_scratch=False)


METHOD = Finetune()
