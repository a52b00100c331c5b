"""Output-layer dampening, the paper's method.

To forget class f, scale the output layer's row for f: ``W[f, :] *= alpha`` and
``b[f] *= alpha`` (PyTorch's [out, in] layout). Small alpha shrinks the logit of f toward
zero, so other classes win the argmax for images of f. Nothing else in the network
changes, which is why this method is fast and why its metrics can reuse cached features.
It cannot forget individual samples: it has no notion of which images a weight encodes.
"""

from __future__ import annotations

from typing import cast

import torch
from pydantic import Field
from torch import nn

from app.architectures.base import ImageClassifier
from app.ml.data import ImageData
from app.unlearning.base import (
    LIGHT_QUEUE,
    enter_phase,
    ForgetTarget,
    MethodParams,
    ProgressCallback,
    UnlearningMethod,
)


class OutputDampeningParams(MethodParams):
    alpha: float = Field(
        gt=0.0, le=1.0, allow_inf_nan=False,
        description="Dampening factor in (0, 1]: 1 keeps the class, 0.01 nearly erases it.",
    )


@torch.no_grad()
def dampen_output_layer(model: nn.Module, classes: tuple[int, ...], alpha: float) -> nn.Module:
    """Scale the output layer's weights and bias of each class by alpha, in place."""
    layer = cast(ImageClassifier, model).output_layer  # a "cnn"-kind model (model_kinds)
    for f in classes:
        layer.weight[f, :] *= alpha
        layer.bias[f] *= alpha
    return model


class OutputDampening(UnlearningMethod):
    name = "output_dampening"
    description = "Scale the output layer's weights and bias for each forgotten class by alpha."
    Params = OutputDampeningParams
    supports_samples = False
    changes_backbone = False
    queue = LIGHT_QUEUE

    def forget(self, model: nn.Module, target: ForgetTarget, params: MethodParams,
               data: ImageData, progress: ProgressCallback) -> nn.Module:
        assert isinstance(params, OutputDampeningParams)
        enter_phase(progress, "dampening")
        model = dampen_output_layer(model, target.classes, params.alpha)
        progress(1.0)
        return model


METHOD = OutputDampening()
