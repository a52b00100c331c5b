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
from typing import Literal, cast

from pydantic import Field
from torch import nn
from torch.func import functional_call, grad, vmap

from app.architectures.base import ImageClassifier
from app.ml.data import ImageData
from app.ml.device import device_of, resident, to_device
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


# Per-sample gradients of this many (image, label) rows are held at once: on a GPU about
# 2 GB of them (one vmapped pass does the work of many), on the CPU a cache-sized 64.
GPU_GRADIENT_BYTES = 2 * 1024**3
CPU_ROWS_PER_PASS = 64


def diagonal_fisher(model: nn.Module, images: torch.Tensor, batch_size: int = 64,
                    progress: ProgressCallback | None = None,
                    sample_labels: torch.Generator | None = None,
                    rows_per_pass: int | None = None) -> dict[str, torch.Tensor]:
    """True diagonal Fisher: mean over images of sum_y p(y|x) * grad(log p(y|x))^2.

    With ``sample_labels`` (a generator), one y ~ p(y|x) per image replaces the sum; the
    labels are drawn on the CPU, ``batch_size`` images at a time, so that a seed gives the
    same draws on every device. The squared per-sample gradients of all (image, label) rows
    are then summed in a few large vmapped passes on the model's device (one pass per
    label and minibatch, as before, spent most of its time in Python dispatch)."""
    model = model.eval()
    device = device_of(model)
    parameters = {name: p.detach() for name, p in model.named_parameters()}
    with torch.no_grad():  # the class count, from the network itself
        num_classes = int(model(images[:1].to(next(iter(parameters.values())).device)).shape[1])
    buffers = {name: b.detach() for name, b in model.named_buffers()}
    images = resident(images, device)
    n = int(images.shape[0])

    with torch.no_grad():
        probabilities = torch.cat([
            torch.softmax(model(to_device(images[start : start + batch_size], device)), dim=1)
            for start in range(0, n, batch_size)
        ]) if n else torch.empty(0, num_classes, device=device)
    if sample_labels is not None:
        host = probabilities.cpu()
        labels = torch.cat([
            torch.multinomial(host[start : start + batch_size], 1, generator=sample_labels).flatten()
            for start in range(0, n, batch_size)
        ]) if n else torch.empty(0, dtype=torch.int64)
        rows = torch.arange(n)
        weights = torch.ones(n, device=device)
        labels = labels.to(device)
    else:  # every label of every image, weighted by its probability
        rows = torch.arange(n).repeat_interleave(num_classes)
        labels = torch.arange(num_classes, device=device).repeat(n)
        weights = probabilities.reshape(-1)
    rows = rows.to(images.device)  # where the images are (the GPU when they fit there)

    def log_probability(params, image, label):
        logits = functional_call(model, (params, buffers), (image.unsqueeze(0),))
        return F.log_softmax(logits, dim=1)[0].gather(0, label.unsqueeze(0))[0]

    per_row_gradient = vmap(grad(log_probability), in_dims=(None, 0, 0))
    if rows_per_pass is None:
        if device.type == "cuda":
            count = sum(p.numel() for p in parameters.values())
            rows_per_pass = max(1, min(4096, GPU_GRADIENT_BYTES // (4 * count)))
        else:
            rows_per_pass = CPU_ROWS_PER_PASS
    fisher = {name: torch.zeros_like(p) for name, p in parameters.items()}
    total = int(rows.shape[0])
    for start in range(0, total, rows_per_pass):
        pick = slice(start, start + rows_per_pass)
        x = to_device(images[rows[pick]], device)
        gradients = per_row_gradient(parameters, x, labels[pick])
        weight = weights[pick]
        for name, gradient in gradients.items():
            shape = (-1,) + (1,) * (gradient.dim() - 1)
            fisher[name] += (weight.view(shape) * gradient.pow(2)).sum(dim=0)
        if progress is not None:
            progress(min(1.0, (start + rows_per_pass) / total))
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
        # A "cnn"-kind model (the method's model_kinds, checked at filing).
        output_layer = cast(ImageClassifier, model).output_layer_name
        perturb(model, fisher, params.noise_scale, target.classes, generator, output_layer)
        progress(1.0)
        return model


METHOD = FisherForgetting()
