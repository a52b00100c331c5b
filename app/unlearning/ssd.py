"""Selective Synaptic Dampening (Foster, Schoepf & Brintrup, AAAI 2024).

Importance of a parameter on a dataset = the mean over its images of the squared gradient
of each image's cross-entropy (the diagonal of the empirical Fisher information, as the
paper defines it), with the model in eval mode (no dropout). Per-image gradients come from
``torch.func``'s ``vmap(grad(...))``; ``batch_size`` only sets how many are computed at
once (speed and memory), never the result. (Squaring a *minibatch mean's* gradient, as an
earlier version did, made [Df]/[D] and so the amount forgotten grow with the batch size.)

* [D]  : importances on the training data the source version still holds (not what its
         lineage forgot; all of it, or a seeded subsample: ``importance_samples``). They
         depend only on the source weights and that data, so they are cached per version
         (memory + disk, keyed by a hash of the weights, the dataset checksum, what the
         lineage forgot, the subsample settings and ``ESTIMATOR_VERSION``).
* [Df] : importances on the forget set (the request's classes and/or sample IDs).

Since Df is part of D and importances are non-negative means, [D] >= |Df|/|D| * [Df], so
[Df]/[D] <= |D|/|Df|: an alpha at or above that bound selects nothing. It is refused at
filing time (422) unless calibration chooses alpha.

Calibration (``calibrate``, the default): the paper's alpha and lambda were tuned on CIFAR
ResNets. The method tries a small grid of (alpha, lambda), in order of least change to the
weights (each candidate's dampening takes milliseconds, [D] and [Df] are computed once),
evaluates each on a validation split of training data the source still holds (never the
test split, on which the acceptance criteria are reported) and keeps the first that meets
the criteria there. Every candidate tried is recorded in the method's report.

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
import json
import threading
from pathlib import Path

from typing import Any, Protocol

import torch
import torch.nn.functional as F
from cachetools import LRUCache
from pydantic import Field
from safetensors.torch import load_file, save_file
from torch import nn
from torch.func import functional_call, grad, vmap

from app.core.errors import InvalidInputError

from app.ml.data import ImageData
from app.ml.device import resident, to_device
from app.unlearning.base import (
    enter_phase,
    ForgetTarget,
    MethodParams,
    ProgressCallback,
    UnlearningMethod,
)

Importances = dict[str, torch.Tensor]

# Part of the importance cache key: caches made by another estimator are never reused.
ESTIMATOR_VERSION = "per-sample-squared-gradient-v2"

# The calibration grid. Larger alpha selects fewer parameters, larger lambda dampens them
# less; candidates are tried in order of the change they make, not in this order.
CALIBRATION_ALPHAS = (10.0, 7.0, 5.0, 3.0, 2.0, 1.9, 1.8, 1.5, 1.2)
CALIBRATION_LAMBDAS = (1.0, 0.1, 0.05, 0.01)


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
        default=None, ge=1_000,
        description="Compute [D] on a seeded random subsample of this many of the training "
        "images the source still holds (at least 1,000; an estimate: the bound "
        "[Df]/[D] <= |D|/|Df| then holds only approximately); default: all of them.",
    )
    batch_size: int = Field(default=128, ge=1, le=4096,
                            description="Images per vmapped gradient pass: speed and memory "
                            "only, the importances do not depend on it.")
    seed: int = Field(default=0, ge=0, description="Seed of the [D] subsample.")
    calibrate: bool = Field(
        default=True,
        description="Search alpha and lambda on a small grid (least change first) against "
        "the request's acceptance criteria on held-out training data; alpha and lambda are "
        "then one more candidate, not a fixed choice.")

    model_config = {**MethodParams.model_config, "populate_by_name": True}


def compute_importances(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                        batch_size: int, device: torch.device = torch.device("cpu"),
                        progress: ProgressCallback | None = None) -> Importances:
    """Mean over images of the squared gradient of each image's cross-entropy."""
    model = model.to(device).eval()
    parameters = {name: p.detach() for name, p in model.named_parameters()}
    buffers = {name: b.detach() for name, b in model.named_buffers()}

    def image_loss(params, image, label):
        logits = functional_call(model, (params, buffers), (image.unsqueeze(0),))
        return F.cross_entropy(logits, label.unsqueeze(0))

    per_image_gradient = vmap(grad(image_loss), in_dims=(None, 0, 0))
    # Sums stay on the device (one copy to the host at the end, not one per minibatch).
    totals = {name: torch.zeros_like(p) for name, p in parameters.items()}
    images, labels = resident(images, device), resident(labels, device)
    n = int(labels.shape[0])
    for start in range(0, n, batch_size):
        x = to_device(images[start : start + batch_size], device)
        y = to_device(labels[start : start + batch_size], device)
        for name, gradient in per_image_gradient(parameters, x, y).items():
            totals[name] += gradient.detach().pow(2).sum(dim=0)
        if progress is not None:
            progress(min(1.0, (start + batch_size) / n))
    return {name: (total / max(1, n)).cpu() for name, total in totals.items()}


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
        self._entries: LRUCache[str, Importances] = LRUCache(maxsize=capacity)
        self._lock = threading.Lock()  # LRUCache is not thread-safe

    @staticmethod
    def key(fingerprint: str, data: ImageData, params: SsdParams, target: ForgetTarget) -> str:
        forgotten = hashlib.sha256(json.dumps(
            [sorted(target.prior_classes), sorted(target.prior_sample_ids)]).encode()).hexdigest()
        setting = (f"{ESTIMATOR_VERSION}|{data.checksum}|{forgotten}|"
                   f"{params.importance_samples}|{params.seed}")
        return f"{fingerprint[:32]}-{hashlib.sha256(setting.encode()).hexdigest()[:16]}"

    def get(self, key: str) -> Importances | None:
        with self._lock:
            remembered = self._entries.get(key)  # a hit counts as a use
        if remembered is not None:
            return remembered
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

    def _path(self, key: str) -> Path | None:
        return self.directory / f"ssd-importance-{key}.safetensors" if self.directory else None


def full_data_importances(model: nn.Module, data: ImageData, target: ForgetTarget,
                          params: SsdParams, cache: ImportanceCache | None,
                          progress: ProgressCallback | None = None) -> Importances:
    """[D] of the source model on the data it still holds, from the cache when this
    version was seen before."""
    key = ImportanceCache.key(state_fingerprint(model), data, params, target) if cache else ""
    if cache is not None and (cached := cache.get(key)) is not None:
        return cached
    held = torch.nonzero(target.held_mask(data)).flatten()
    if params.importance_samples is not None and params.importance_samples < len(held):
        generator = torch.Generator().manual_seed(params.seed)
        held = held[torch.randperm(len(held), generator=generator)[: params.importance_samples]]
    importances = compute_importances(model, data.train_images[held], data.train_labels[held],
                                      params.batch_size, _device_of(model), progress)
    if cache is not None:
        cache.put(key, importances)
    return importances


def selection_bound(target: ForgetTarget, data: ImageData) -> float:
    """|D| / |Df|: the largest [Df]/[D] can be, so the alpha that selects nothing."""
    forget_count = int(target.forget_mask(data).sum())
    return int(target.held_mask(data).sum()) / max(1, forget_count)


class CandidateCheck(Protocol):
    """Evaluates a candidate model against the acceptance criteria on validation data
    (``app.verification.calibration.ValidationCheck``)."""

    def evaluate(self, model: nn.Module) -> dict[str, Any]: ...

    def describe(self) -> dict[str, Any]: ...


@torch.no_grad()
def relative_change(model: nn.Module, reference: dict[str, torch.Tensor]) -> float:
    """||theta - theta_source|| / ||theta_source|| over all parameters."""
    changed = total = 0.0
    for name, parameter in model.named_parameters():
        changed += float((parameter - reference[name]).pow(2).sum())
        total += float(reference[name].pow(2).sum())
    return (changed / max(total, 1e-30)) ** 0.5


def calibrate(model: nn.Module, full: Importances, forget: Importances, params: SsdParams,
              bound: float, check: CandidateCheck) -> dict[str, Any]:
    """Dampen ``model`` in place with the first grid candidate, in order of least change,
    that meets the criteria on validation data. Returns the report of every candidate."""
    source = {name: p.detach().clone() for name, p in model.named_parameters()}
    grid = sorted({(a, lam) for a in CALIBRATION_ALPHAS for lam in CALIBRATION_LAMBDAS}
                  | {(params.alpha, params.lam)}, reverse=True)
    candidates: list[dict[str, Any]] = []
    for alpha, lam in grid:
        if alpha >= bound:  # selects nothing: [Df]/[D] <= |D|/|Df|
            candidates.append({"alpha": alpha, "lambda": lam, "skipped":
                               f"alpha >= |D|/|Df| = {bound:.2f} selects nothing"})
            continue
        selected = sum(dampen(model, full, forget, alpha, lam).values())
        candidates.append({"alpha": alpha, "lambda": lam, "selected_elements": selected,
                           "relative_change": relative_change(model, source)})
        _restore(model, source)
    tried = sorted((c for c in candidates if "skipped" not in c),
                   key=lambda c: (c["relative_change"], -c["alpha"], -c["lambda"]))
    chosen = None
    for candidate in tried:
        dampen(model, full, forget, candidate["alpha"], candidate["lambda"])
        outcome = check.evaluate(model)
        candidate.update(evaluated=True, **outcome)
        _restore(model, source)
        if outcome["passed"]:
            chosen, reason = candidate, "least change that meets the criteria on validation data"
            break
    if chosen is None and tried:
        # Nothing met every criterion: the most forgetting that keeps the retained data,
        # else the least change. The acceptance criteria will then say what is missing.
        keeping = [c for c in tried if c.get("retain_ok")]
        if keeping:
            chosen = min(keeping, key=lambda c: (c["forget_score"], c["relative_change"]))
            reason = ("no candidate met every criterion on validation data; kept the one "
                      "that forgets most while keeping the retained accuracy")
        else:
            chosen = tried[0]
            reason = "no candidate met the criteria on validation data; kept the least change"
    if chosen is not None:
        dampen(model, full, forget, chosen["alpha"], chosen["lambda"])
    for candidate in candidates:
        if "relative_change" in candidate:
            candidate["relative_change"] = round(candidate["relative_change"], 6)
    return {
        "calibrated": True,
        "chosen": None if chosen is None else {"alpha": chosen["alpha"],
                                               "lambda": chosen["lambda"]},
        "chosen_because": reason if chosen is not None else "every candidate selects nothing",
        "selection_bound": round(bound, 4),
        "validation": check.describe(),
        "candidates": sorted(candidates, key=lambda c: c.get("relative_change", -1.0)),
    }


@torch.no_grad()
def _restore(model: nn.Module, source: dict[str, torch.Tensor]) -> None:
    for name, parameter in model.named_parameters():
        parameter.copy_(source[name])


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class SelectiveSynapticDampening(UnlearningMethod):
    name = "ssd"
    description = ("Selective Synaptic Dampening: dampen parameters far more important to the "
                   "forget set than to the training data (classes or sample IDs).")
    Params = SsdParams
    calibrates = True

    def __init__(self) -> None:
        self.cache: ImportanceCache | None = ImportanceCache()

    def check_request(self, params: MethodParams, target: ForgetTarget, data: ImageData) -> None:
        assert isinstance(params, SsdParams)
        bound = selection_bound(target, data)
        if not params.calibrate and params.alpha >= bound:
            raise InvalidInputError(
                f"params.alpha = {params.alpha:g} selects no parameter: a forget-set "
                f"importance is at most |D|/|Df| = {bound:.2f} times the importance on all "
                f"the data the source version holds, so alpha must be below that (or set "
                f"params.calibrate to true and let the method choose)", "params.alpha")

    def forget(self, model: nn.Module, target: ForgetTarget, params: MethodParams,
               data: ImageData, progress: ProgressCallback,
               check: CandidateCheck | None = None) -> nn.Module:
        assert isinstance(params, SsdParams)
        enter_phase(progress, "importance")
        full = full_data_importances(model, data, target, params, self.cache,
                                     lambda f: progress(0.8 * f))
        forget_mask = target.forget_mask(data)
        forget = compute_importances(model, data.train_images[forget_mask],
                                     data.train_labels[forget_mask], params.batch_size,
                                     _device_of(model), lambda f: progress(0.8 + 0.2 * f))
        enter_phase(progress, "calibration" if params.calibrate and check is not None
                    else "dampening")
        bound = selection_bound(target, data)
        if params.calibrate and check is not None:
            report = calibrate(model, full, forget, params, bound, check)
        else:
            counts = dampen(model, full, forget, params.alpha, params.lam)
            report = {"calibrated": False, "chosen": {"alpha": params.alpha,
                                                       "lambda": params.lam},
                      "selection_bound": round(bound, 4),
                      "selected_elements": sum(counts.values())}
        # A plain attribute the pipeline reads back (getattr); torch types module
        # attributes as Tensor | Module.
        model.forget_report = {"ssd": report}  # type: ignore[assignment]
        progress(1.0)
        return model


METHOD = SelectiveSynapticDampening()
