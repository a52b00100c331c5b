"""Fisher forgetting (Golatkar, Achille & Soatto, "Eternal Sunshine of the Spotless Net",
CVPR 2020), following the reference implementation that the SSD paper also benchmarks.

1. Diagonal Fisher information on the retain set (a seeded subsample of ``fisher_samples``
   retained training images; the true Fisher, i.e. the expectation over the model's own
   predictive distribution):

       F_i = 1/N * sum_n sum_y p(y | x_n) * (d/d theta_i  log p(y | x_n))^2

   The reference code sums over all 10 labels y (``fisher_labels="all"``: 10 per-sample
   backward passes per image). By default (``"sampled"``) one label per image is drawn
   from p(y | x_n) with the seeded generator: an unbiased Monte-Carlo estimate of the
   same sum at a tenth of the cost, which lets more images (``fisher_samples``) in.

2. Noise variance, large where the retain set does not constrain a parameter:

       var_i = noise_scale * min(1 / (F_i + 1e-8), cap)

   with ``cap`` = 1e3, or 1e2 for the output layer; for a weight tensor the variance is
   averaged over its input dimensions (one variance per output unit); the output layer's
   and every bias's variance is then multiplied by 10 (all as in the reference code).
   For forgotten classes the output layer's rows are reset to mean 0, variance 1e-4.

3. theta_i <- mu_i + sqrt(var_i) * eps_i, eps_i ~ N(0, 1) from a seeded generator,
   where mu_i is the source weight (0 for the forgotten classes' output rows).

``noise_scale`` (the reference code's ``alpha``, yet another meaning of that letter) sets
the trade-off: larger forgets more and damages more.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from typing import Literal

from pydantic import Field
from torch import nn
from torch.func import functional_call, grad, vmap

from app.ml.data import ImageData
from app.unlearning.base import (
    enter_phase,
    ForgetTarget,
    MethodParams,
    ProgressCallback,
    UnlearningMethod,
)

VARIANCE_CAP = 1e3
OUTPUT_VARIANCE_CAP = 1e2
FORGOTTEN_ROW_VARIANCE = 1e-4


class FisherParams(MethodParams):
    noise_scale: float = Field(
        default=1e-6, gt=0.0, le=1.0, allow_inf_nan=False,
        description="Scale of the injected noise's variance (the reference code's alpha).",
    )
    fisher_samples: int = Field(
        default=1000, ge=100, le=60_000,
        description="Retained training images (seeded subsample) for the Fisher estimate.",
    )
    fisher_labels: Literal["sampled", "all"] = Field(
        default="sampled",
        description="'all': sum over the 10 labels weighted by p(y|x) (the reference code); "
        "'sampled': one label drawn from p(y|x) per image (unbiased, 10x cheaper).",
    )
    seed: int = Field(default=0, ge=0, description="Seed of the subsample and the noise.")


def diagonal_fisher(model: nn.Module, images: torch.Tensor, batch_size: int = 64,
                    progress: ProgressCallback | None = None,
                    sample_labels: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """True diagonal Fisher: mean over images of sum_y p(y|x) * grad(log p(y|x))^2.

    With ``sample_labels`` (a generator), one y ~ p(y|x) per image replaces the sum."""
    model = model.eval()
    parameters = {name: p.detach() for name, p in model.named_parameters()}
    with torch.no_grad():  # the class count, from the network itself
        num_classes = int(model(images[:1].to(next(iter(parameters.values())).device)).shape[1])
    buffers = {name: b.detach() for name, b in model.named_buffers()}

    def log_probabilities(params, image):
        logits = functional_call(model, (params, buffers), (image.unsqueeze(0),))
        return F.log_softmax(logits, dim=1)[0]

    # One vmapped per-sample gradient function per label (a Python int, not vmapped).
    per_label_gradient = [
        vmap(grad(lambda params, image, k=k: log_probabilities(params, image)[k]),
             in_dims=(None, 0))
        for k in range(num_classes)
    ]
    fisher = {name: torch.zeros_like(p) for name, p in parameters.items()}
    n = int(images.shape[0])
    for start in range(0, n, batch_size):
        x = images[start : start + batch_size].to(next(iter(parameters.values())).device)
        with torch.no_grad():
            probabilities = torch.softmax(model(x), dim=1)
        if sample_labels is not None:
            drawn = torch.multinomial(probabilities.cpu(), 1, generator=sample_labels).flatten()
        for label in range(num_classes):
            if sample_labels is None:
                rows = torch.arange(x.shape[0])
                weight = probabilities[:, label]
            else:  # only the images that drew this label, each with weight 1
                rows = torch.nonzero(drawn == label).flatten()
                if rows.numel() == 0:
                    continue
                weight = torch.ones(rows.numel(), device=x.device)
            gradients = per_label_gradient[label](parameters, x[rows.to(x.device)])
            for name, gradient in gradients.items():
                shape = (-1,) + (1,) * (gradient.dim() - 1)
                fisher[name] += (weight.view(shape) * gradient.pow(2)).sum(dim=0)
        if progress is not None:
            progress(min(1.0, (start + batch_size) / n))
    return {name: value / max(1, n) for name, value in fisher.items()}


def noise_variance(name: str, fisher: torch.Tensor, noise_scale: float,
                   forgotten_classes: tuple[int, ...], output_layer: str) -> torch.Tensor:
    """The reference code's per-element variance for one parameter tensor."""
    is_output = name.startswith(output_layer + ".")
    variance = (1.0 / (fisher + 1e-8)).clamp(max=OUTPUT_VARIANCE_CAP if is_output else VARIANCE_CAP)
    variance = noise_scale * variance
    if variance.dim() > 1:
        variance = variance.mean(dim=tuple(range(1, variance.dim())), keepdim=True)
        variance = variance.expand_as(fisher).clone()
    if is_output:
        for f in forgotten_classes:
            variance[f] = FORGOTTEN_ROW_VARIANCE
    if is_output or variance.dim() == 1:
        variance = variance * 10.0
    return variance


@torch.no_grad()
def perturb(model: nn.Module, fisher: dict[str, torch.Tensor], noise_scale: float,
            forgotten_classes: tuple[int, ...], generator: torch.Generator,
            output_layer: str) -> nn.Module:
    """theta <- mu + sqrt(var) * eps, in place (mu = theta, or 0 for forgotten output rows)."""
    for name, parameter in model.named_parameters():
        variance = noise_variance(name, fisher[name].cpu(), noise_scale, forgotten_classes,
                                  output_layer)
        mean = parameter.detach().cpu().clone()
        if name.startswith(output_layer + "."):
            for f in forgotten_classes:
                mean[f] = 0.0
        noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
        parameter.copy_((mean + variance.sqrt() * noise).to(parameter.device))
    return model


class FisherForgetting(UnlearningMethod):
    name = "fisher"
    description = ("Fisher forgetting: add noise scaled by the inverse diagonal Fisher "
                   "information of the retain set (Golatkar et al., CVPR 2020).")
    Params = FisherParams

    def forget(self, model: nn.Module, target: ForgetTarget, params: MethodParams,
               data: ImageData, progress: ProgressCallback) -> nn.Module:
        assert isinstance(params, FisherParams)
        generator = torch.Generator().manual_seed(params.seed)
        retained = torch.nonzero(target.retain_mask(data)).flatten()
        pick = retained[torch.randperm(len(retained), generator=generator)[: params.fisher_samples]]
        enter_phase(progress, "importance")
        fisher = diagonal_fisher(
            model, data.train_images[pick], progress=progress,
            sample_labels=generator if params.fisher_labels == "sampled" else None)
        enter_phase(progress, "dampening")
        perturb(model, fisher, params.noise_scale, target.classes, generator,
                model.output_layer_name)
        progress(1.0)
        return model


METHOD = FisherForgetting()
