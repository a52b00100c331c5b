"""Per-sample membership test: offline LiRA with a global variance (Carlini et al., "Membership
Inference Attacks From First Principles", 2022; used for unlearning by Hayes et al.,
"Inexact Unlearning Needs More Careful Evaluations", 2024).

A bank of shadow models of the model's own architecture, each trained with the base
recipe on a seeded random half of the training split. For every training image, the
shadows whose half did *not* contain it ("OUT" shadows) show how confident a model that
never saw the image is on it. The statistic is the logit-scaled confidence in the true
label, ``phi = log(p_y / (1 - p_y))``, which is close to Gaussian across models.

Offline test for one image x under a model M:

    z(x) = (phi_M(x) - mean of phi over x's OUT shadows) / sigma

where sigma is one global standard deviation of the OUT scores around their per-image
means (pooled over all images: the "global variance" variant, which needs far fewer
shadows than a per-image variance). A model that never saw x gives z ~ N(0, 1); a model
that memorised x is more confident than its OUT shadows, so z is large. x is *flagged*
as a member at false-positive rate ``fpr`` when ``z > Phi^-1(1 - fpr)``.

The shadows' statistics are precomputed once (one file per shadow, written as it
completes, so ``unlearn shadows train`` resumes after an interruption). A request then
needs only its models' per-image losses (phi is computed from the loss, which the metrics
already have: ``phi = -loss - log(1 - exp(-loss))``).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file, save_file
from scipy.stats import binom, norm
from torch import nn

from app.architectures.base import ImageClassifier
from app.evaluation.membership import auc
from app.ml.data import ImageData
from app.ml.training import TrainingRecipe, train_model

# Fewer OUT shadows than this for an image and its mean is too noisy to test against.
MIN_OUT_SHADOWS = 2


def logit_confidence_from_loss(loss: np.ndarray) -> np.ndarray:
    """phi = log(p / (1 - p)) with p = exp(-loss), stable for p near 0 and near 1."""
    loss = np.maximum(np.asarray(loss, dtype=np.float64), 1e-300)
    return -loss - np.log(-np.expm1(-loss))


@torch.inference_mode()
def per_image_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                   batch_size: int = 2048) -> np.ndarray:
    model = model.eval()
    device = next(model.parameters()).device
    losses = []
    for start in range(0, len(labels), batch_size):
        logits = model(images[start:start + batch_size].to(device)).cpu().to(torch.float64)
        losses.append(F.cross_entropy(logits, labels[start:start + batch_size],
                                      reduction="none").numpy())
    return np.concatenate(losses) if losses else np.zeros(0)


def member_halves(num_train: int, index: int, bank_seed: int) -> np.ndarray:
    """Shadow ``index``'s training half: a seeded random half of the training split."""
    rng = np.random.default_rng([bank_seed, index])
    member = np.zeros(num_train, dtype=bool)
    member[rng.permutation(num_train)[: num_train // 2]] = True
    return member


def bank_directory(root: Path, model_name: str, root_version: int, data: ImageData) -> Path:
    """Where a lineage's bank lives: per model, lineage root and dataset."""
    data_key = hashlib.sha256(data.checksum.encode()).hexdigest()[:16]
    return Path(root) / model_name / f"v{root_version}-{data_key}"


def train_shadows(directory: Path, data: ImageData, architecture_builder: Callable[[], ImageClassifier],
                  recipe: TrainingRecipe, count: int, bank_seed: int = 0,
                  report: Callable[[int, int, str], None] | None = None) -> list[Path]:
    """Train shadows 0..count-1 that are not in ``directory`` yet; each one's statistics
    are written (atomically) as soon as it is trained, so a rerun resumes where an
    interrupted run stopped. Returns the files of all ``count`` shadows."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = directory / f"shadow-{index:03d}.safetensors"
        paths.append(path)
        if path.exists():
            if report:
                report(index, count, "present")
            continue
        member = member_halves(data.num_train, index, bank_seed)
        shadow_recipe = TrainingRecipe(**{**recipe.to_dict(),
                                          "seed": bank_seed * 100_003 + index})
        picked = torch.from_numpy(np.flatnonzero(member))
        torch.manual_seed(shadow_recipe.seed)  # the initial weights too, not only the order
        model = train_model(data.train_images[picked], data.train_labels[picked],
                            shadow_recipe, model=architecture_builder())
        train_phi = logit_confidence_from_loss(
            per_image_loss(model, data.train_images, data.train_labels))
        test_phi = logit_confidence_from_loss(
            per_image_loss(model, data.test_images, data.test_labels))
        metadata = {"index": str(index), "bank_seed": str(bank_seed),
                    "recipe": json.dumps(shadow_recipe.to_dict(), sort_keys=True),
                    "data_checksum": data.checksum}
        temporary = path.with_name(f".tmp-{path.name}")
        save_file({"member": member.astype(np.uint8), "train_phi": train_phi.astype(np.float32),
                   "test_phi": test_phi.astype(np.float32),
                   "train_ids": data.train_ids.numpy().astype(np.int64)},
                  str(temporary), metadata=metadata)
        temporary.replace(path)
        if report:
            report(index, count, "trained")
    return paths


@dataclass(frozen=True)
class ShadowStatistics:
    """What a request needs from a bank: per training image, the mean OUT score and the
    number of OUT shadows; per test image, the mean score; one global sigma."""

    count: int
    train_out_mean: np.ndarray
    train_out_count: np.ndarray
    test_out_mean: np.ndarray
    sigma: float

    @classmethod
    def from_files(cls, paths: list[Path], data: ImageData) -> "ShadowStatistics":
        members, train_phi, test_phi = [], [], []
        for path in sorted(paths):
            tensors = load_file(str(path))
            if not np.array_equal(tensors["train_ids"], data.train_ids.numpy()):
                raise ValueError(f"{path} was computed on another training split")
            members.append(tensors["member"].astype(bool))
            train_phi.append(tensors["train_phi"].astype(np.float64))
            test_phi.append(tensors["test_phi"].astype(np.float64))
        member = np.stack(members)
        train = np.stack(train_phi)
        test = np.stack(test_phi)
        out = ~member
        out_count = out.sum(axis=0)
        train_mean = np.where(out_count > 0, (train * out).sum(axis=0) / np.maximum(out_count, 1),
                              np.nan)
        test_mean = test.mean(axis=0)
        residuals = np.concatenate([(train - train_mean)[out & (out_count >= MIN_OUT_SHADOWS)],
                                    (test - test_mean).ravel()])
        sigma = float(residuals.std()) if residuals.size > 1 else float("nan")
        return cls(len(paths), train_mean, out_count, test_mean, sigma)


class ShadowBanks:
    """Loaded banks' statistics, by directory, in memory (a bank is read once)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._loaded: dict[tuple[str, str], ShadowStatistics] = {}
        self._lock = threading.Lock()

    def directory(self, model_name: str, root_version: int, data: ImageData) -> Path:
        return bank_directory(self.root, model_name, root_version, data)

    def get(self, model_name: str, root_version: int, data: ImageData) -> ShadowStatistics | None:
        directory = self.directory(model_name, root_version, data)
        paths = sorted(directory.glob("shadow-*.safetensors")) if directory.is_dir() else []
        if not paths:
            return None
        key = (str(directory), ",".join(path.name for path in paths))
        with self._lock:
            if key in self._loaded:
                return self._loaded[key]
        statistics = ShadowStatistics.from_files(paths, data)
        with self._lock:
            self._loaded[key] = statistics
        return statistics


def z_scores(statistics: ShadowStatistics, train_phi: np.ndarray | None = None,
             positions: np.ndarray | None = None,
             test_phi: np.ndarray | None = None) -> np.ndarray:
    """z of training images at ``positions`` (NaN where too few OUT shadows), or of every
    test image when ``test_phi`` is given."""
    if test_phi is not None:
        return (np.asarray(test_phi) - statistics.test_out_mean) / statistics.sigma
    z = (np.asarray(train_phi)[positions] - statistics.train_out_mean[positions]) / statistics.sigma
    return np.where(statistics.train_out_count[positions] >= MIN_OUT_SHADOWS, z, np.nan)


def flag_threshold(fpr: float) -> float:
    return float(norm.ppf(1.0 - fpr))


def allowed_flagged(n: int, fpr: float, significance: float) -> int:
    """Largest number of flagged images out of n that is still consistent with "none of
    them was seen" (each flagged with probability fpr): the (1 - significance) quantile of
    Binomial(n, fpr). More flagged than this is evidence that the model remembers them."""
    return int(binom.ppf(1.0 - significance, n, fpr)) if n > 0 else 0


def tpr_at_fpr(positive: np.ndarray, negative: np.ndarray, fpr: float) -> float | None:
    """Fraction of positives above the negatives' (1 - fpr) quantile: an empirical
    threshold set on never-seen images."""
    if len(positive) == 0 or len(negative) == 0:
        return None
    threshold = np.quantile(negative, 1.0 - fpr)
    return float((positive > threshold).mean())


def set_figures(z: np.ndarray, z_nonmembers: np.ndarray, fpr: float) -> dict:
    """Figures of one set of training images under one model."""
    tested = z[~np.isnan(z)]
    flagged = int((tested > flag_threshold(fpr)).sum())
    tpr = tpr_at_fpr(tested, z_nonmembers, fpr)
    area = auc(tested, z_nonmembers)
    return {
        "samples": int(len(z)),
        "samples_tested": int(len(tested)),
        # Flagged by the Gaussian test (threshold Phi^-1(1 - fpr) on z).
        "flagged": flagged,
        "flagged_fraction": round(flagged / len(tested), 4) if len(tested) else None,
        # Detected with the threshold set on never-seen images under the same model (its
        # (1 - fpr) quantile): robust to a shift of the whole model against its shadows.
        "detected": None if tpr is None else int(round(tpr * len(tested))),
        "tpr_at_fpr": None if tpr is None else round(tpr, 4),
        "auc": None if area is None else round(area, 4),
    }


def model_figures(statistics: ShadowStatistics, train_loss: np.ndarray, test_loss: np.ndarray,
                  forget_positions: np.ndarray, control_positions: np.ndarray,
                  nonmember_test: np.ndarray, fpr: float) -> dict:
    """Forget-set and control figures of one model from its per-image losses."""
    train_phi = logit_confidence_from_loss(train_loss)
    z_test = z_scores(statistics, test_phi=logit_confidence_from_loss(test_loss))
    z_nonmembers = z_test[nonmember_test]
    return {
        "forget": set_figures(z_scores(statistics, train_phi, forget_positions), z_nonmembers, fpr),
        "retained_control": set_figures(z_scores(statistics, train_phi, control_positions),
                                        z_nonmembers, fpr),
        # The test's own false-positive rate on never-seen images: near fpr if calibrated.
        "test_flagged_fraction": round(float((z_nonmembers > flag_threshold(fpr)).mean()), 4)
        if len(z_nonmembers) else None,
    }
