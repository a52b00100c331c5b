"""SISA forgetting: exact unlearning for models of kind "sisa" (see ``app/ml/sisa.py``).

The forget set's training IDs (every image of a requested class, plus listed IDs) are
removed from the shards that hold them, and only those shards are retrained, each from
the checkpoint before the first slice that held a forgotten sample. The new version's
model card records which shards changed (``forget_report``). Requires a SISA source
version (``unlearn train --kind sisa``); the other methods work on single CNNs.
"""

from __future__ import annotations

from torch import nn

from app.ml.data import ImageData
from app.ml.sisa import KIND, SisaEnsemble
from app.unlearning.base import (
    enter_phase,
    ForgetTarget,
    MethodParams,
    ProgressCallback,
    UnlearningMethod,
)


class SisaParams(MethodParams):
    """No parameters: shards, slices and the training recipe belong to the SISA version."""


class SisaForgetting(UnlearningMethod):
    name = "sisa"
    exact = True
    description = ("Exact unlearning for SISA ensembles: retrain only the shards that held "
                   "the forgotten samples, from their last clean slice checkpoint.")
    Params = SisaParams
    model_kinds = (KIND,)

    def forget(self, model: nn.Module, target: ForgetTarget, params: MethodParams,
               data: ImageData, progress: ProgressCallback) -> nn.Module:
        if not isinstance(model, SisaEnsemble):
            raise TypeError("the sisa method needs a SISA version (kind 'sisa')")
        forget_ids = data.train_ids[target.forget_mask(data)]
        device = next(model.parameters()).device
        enter_phase(progress, "retraining shards")
        model.forget_samples(forget_ids, data, device, progress)
        progress(1.0)
        return model


METHOD = SisaForgetting()
