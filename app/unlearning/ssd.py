"""Selective Synaptic Dampening (Foster, Schoepf & Brintrup, AAAI 2024).

Importance of a parameter on a dataset = the squared gradient of the mean cross-entropy
of a minibatch, averaged over the minibatches, with the model in eval mode (no dropout).

* [D]  : importances on the source version's training set (all of it, or a seeded
         subsample of at least 10,000 images: ``importance_samples``). They depend only on
         the source weights and the data, so they are cached per version (memory + disk,
         keyed by a hash of the weights, the dataset checksum and the subsample settings).
* [Df] : importances on the forget set (the request's classes and/or sample IDs).

For every parameter element (weights and biases of every layer) where
``[Df] > alpha * [D]`` (the element matters far more for the forget set than for the
data as a whole), multiply it by ``min(lambda * [D] / [Df], 1)``. Defaults alpha = 10,
lambda = 1, as in the paper.

Name clash: SSD's ``alpha`` is a *selection threshold* (>= 1; larger selects fewer
parameters), while the service's original method ``output_dampening`` calls its
*dampening factor* ``alpha`` (in (0, 1]; smaller forgets more). They are different
quantities. In the API each lives in its own method's ``params``, so
``{"method": "ssd", "params": {"alpha": 10}}`` and ``{"method": "output_dampening",
"params": {"alpha": 0.01}}`` never mix.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import Field
from safetensors.torch import load_file, save_file
from torch import nn

from app.ml.data import ImageData
from app.ml.device import resident, to_device
from app.unlearning.base import (
    ForgetTarget,
    MethodParams,
    ProgressCallback,
    UnlearningMethod,
)

Importances = dict[str, torch.Tensor]


class SsdParams(MethodParams):
    alpha: float = Field(
        default=10.0, ge=1.0, le=1e6, allow_inf_nan=False,
        description="Selection threshold: dampen elements whose forget-set importance "
        "exceeds alpha x their full-data importance (NOT output_dampening's alpha).",
    )
    # ``lambda`` is a Python keyword: the field is ``lam`` in code, ``lambda`` in the API.
    lam: float = Field(
        default=1.0, alias="lambda", gt=0.0, le=1e6, allow_inf_nan=False,
        description="Dampening constant: selected elements are multiplied by "
        "min(lambda x [D] / [Df], 1).",
    )
    importance_samples: int | None = Field(
        default=None, ge=10_000,
        description="Compute [D] on a seeded random subsample of this many training images "
        "(at least 10,000); default: the whole training set.",
    )
    batch_size: int = Field(default=128, ge=8, le=4096,
                            description="Minibatch size for both importance passes.")
    seed: int = Field(default=0, ge=0, description="Seed of the [D] subsample.")

    model_config = {**MethodParams.model_config, "populate_by_name": True}


def compute_importances(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                        batch_size: int, device: torch.device = torch.device("cpu"),
                        progress: ProgressCallback | None = None) -> Importances:
    """Mean over minibatches of the squared gradient of each minibatch's mean cross-entropy."""
    model = model.to(device).eval()
    parameters = dict(model.named_parameters())
    # Sums stay on the device (one copy to the host at the end, not one per minibatch).
    totals = {name: torch.zeros_like(p) for name, p in parameters.items()}
    images, labels = resident(images, device), resident(labels, device)
    batches = 0
    n = int(labels.shape[0])
    for start in range(0, n, batch_size):
        x = to_device(images[start : start + batch_size], device)
        y = to_device(labels[start : start + batch_size], device)
        loss = F.cross_entropy(model(x), y)
        gradients = torch.autograd.grad(loss, list(parameters.values()))
        for name, gradient in zip(parameters, gradients):
            totals[name] += gradient.detach().pow(2)
        batches += 1
        if progress is not None:
            progress(min(1.0, (start + batch_size) / n))
    return {name: (total / max(1, batches)).cpu() for name, total in totals.items()}


@torch.no_grad()
def dampen(model: nn.Module, full_importance: Importances, forget_importance: Importances,
           alpha: float, lam: float) -> dict[str, int]:
    """Apply SSD in place; returns the number of dampened elements per parameter.

    Where ``[Df] > alpha * [D]``, multiply the element by ``min(lam * [D] / [Df], 1)``.
    Selected elements have [Df] > 0 (since [D] >= 0), so the division is safe.
    """
    dampened = {}
    for name, parameter in model.named_parameters():
        full = full_importance[name].to(parameter.device)
        forget = forget_importance[name].to(parameter.device)
        selected = forget > alpha * full
        factor = (lam * full[selected] / forget[selected]).clamp(max=1.0)
        parameter[selected] = parameter[selected] * factor.to(parameter.dtype)
        dampened[name] = int(selected.sum())
    return dampened


def state_fingerprint(model: nn.Module) -> str:
    """sha256 of every tensor of the model: equal for equal weights (the cache key part
    that plays the artifact's sha256; the method sees the model, not the registry row)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class ImportanceCache:
    """[D] per (weights, data, subsample settings): bounded in memory, optionally on disk."""

    def __init__(self, directory: Path | None = None, capacity: int = 4):
        self.directory = Path(directory) if directory else None
        self.capacity = capacity
        self._entries: OrderedDict[str, Importances] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(fingerprint: str, data: ImageData, params: SsdParams) -> str:
        setting = f"{data.checksum}|{params.importance_samples}|{params.seed}|{params.batch_size}"
        return f"{fingerprint[:32]}-{hashlib.sha256(setting.encode()).hexdigest()[:16]}"

    def get(self, key: str) -> Importances | None:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        path = self._path(key)
        if path is None or not path.exists():
            return None
        try:
            importances = load_file(str(path))
        except Exception:  # a damaged cache file is recomputed, never trusted
            path.unlink(missing_ok=True)
            return None
        self._remember(key, importances)
        return importances

    def put(self, key: str, importances: Importances) -> None:
        self._remember(key, importances)
        path = self._path(key)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".tmp-{threading.get_ident()}-{path.name}")
            save_file({k: v.contiguous() for k, v in importances.items()}, str(temporary))
            temporary.replace(path)

    def _remember(self, key: str, importances: Importances) -> None:
        with self._lock:
            self._entries[key] = importances
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def _path(self, key: str) -> Path | None:
        return self.directory / f"ssd-importance-{key}.safetensors" if self.directory else None


def full_data_importances(model: nn.Module, data: ImageData, params: SsdParams,
                          cache: ImportanceCache | None,
                          progress: ProgressCallback | None = None) -> Importances:
    """[D] of the source model, from the cache when this version was seen before."""
    key = ImportanceCache.key(state_fingerprint(model), data, params) if cache else ""
    if cache is not None and (cached := cache.get(key)) is not None:
        return cached
    images, labels = data.train_images, data.train_labels
    if params.importance_samples is not None and params.importance_samples < data.num_train:
        generator = torch.Generator().manual_seed(params.seed)
        pick = torch.randperm(data.num_train, generator=generator)[: params.importance_samples]
        images, labels = images[pick], labels[pick]
    importances = compute_importances(model, images, labels, params.batch_size,
                                      _device_of(model), progress)
    if cache is not None:
        cache.put(key, importances)
    return importances


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class SelectiveSynapticDampening(UnlearningMethod):
    name = "ssd"
    description = ("Selective Synaptic Dampening: dampen parameters far more important to the "
                   "forget set than to the training data (classes or sample IDs).")
    Params = SsdParams

    def __init__(self) -> None:
        self.cache: ImportanceCache | None = ImportanceCache()

    def forget(self, model: nn.Module, target: ForgetTarget, params: MethodParams,
               data: ImageData, progress: ProgressCallback) -> nn.Module:
        assert isinstance(params, SsdParams)
        full = full_data_importances(model, data, params, self.cache,
                                     lambda f: progress(0.8 * f))
        forget_mask = target.forget_mask(data)
        forget = compute_importances(model, data.train_images[forget_mask],
                                     data.train_labels[forget_mask], params.batch_size,
                                     _device_of(model))
        progress(0.95)
        dampen(model, full, forget, params.alpha, params.lam)
        progress(1.0)
        return model


METHOD = SelectiveSynapticDampening()
