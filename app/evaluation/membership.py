"""Membership inference attacks (MIA): does the model still behave as if it had seen the
forget set? Both attacks are seeded and bounded in cost (subsampled, 1-D features).

* ``entropy_attack`` — the SSD paper's attack (after Chundawat et al.): a logistic
  regression on the softmax entropy, fitted with balanced class weights on retained
  training images (members, label 1; a seeded subsample of at most ``max_fit``) versus test
  images (non-members, label 0; at most ``max_fit``). Reported: the fraction of the forget
  set it calls members. A model that never saw the forget set scores like on unseen data.
* ``loss_threshold_attack`` — how well forget-set losses can be told from non-member
  losses: both sides subsampled (seeded) to the same size n <= ``max_samples``, a logistic
  regression on the loss (a learnt threshold) scored by stratified k-fold cross-validated
  accuracy. 0.5 means indistinguishable; 1.0 means every forget image is recognisable.
  Non-members are the test images of the forgotten classes for a class request (so that
  "never seen this class" is compared like for like), otherwise the whole test set.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import StratifiedKFold

MIA_SEED = 0
MAX_FIT = 5_000
MAX_SAMPLES = 5_000
FOLDS = 5


def softmax_entropy(logits: torch.Tensor) -> np.ndarray:
    log_p = F.log_softmax(logits.to(torch.float64), dim=1)
    return (-(log_p.exp() * log_p).sum(dim=1)).numpy()


def per_sample_loss(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    return F.cross_entropy(logits.to(torch.float64), labels, reduction="none").numpy()


def fit_logistic_1d(x: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None,
                    c: float = 1.0, iterations: int = 50) -> tuple[float, float]:
    """Logistic regression on one feature: (weight, intercept) minimising
    ``0.5 * w**2 + c * sum_i s_i * logloss_i`` (scikit-learn's objective and default C;
    the intercept is not penalised). Newton's method on the 2x2 problem converges in a
    handful of O(n) steps, where a general solver costs ~20 ms a fit: these attacks run
    on every forget request, before and after."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    s = np.ones_like(x) if sample_weight is None else np.asarray(sample_weight, np.float64)
    # Standardise for conditioning; map back at the end (penalty on the original weight).
    mean, scale = x.mean(), x.std() or 1.0
    z = (x - mean) / scale
    w = b = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(w * z + b)))
        r = c * s * (p - y)
        q = c * s * p * (1.0 - p)
        grad = np.array([w / scale**2 + (r * z).sum(), r.sum()])
        hess = np.array([[1.0 / scale**2 + (q * z * z).sum(), (q * z).sum()],
                         [(q * z).sum(), q.sum() + 1e-12]])
        step = np.linalg.solve(hess, grad)
        w, b = w - step[0], b - step[1]
        if np.abs(step).max() < 1e-10:
            break
    weight = w / scale
    return float(weight), float(b - weight * mean)


def _predict(weight: float, intercept: float, x: np.ndarray) -> np.ndarray:
    return (weight * np.asarray(x, dtype=np.float64).ravel() + intercept) > 0.0


def _balanced_weights(y: np.ndarray) -> np.ndarray:
    """scikit-learn's class_weight='balanced': n / (2 * n_class) per sample."""
    positives = y.sum()
    negatives = len(y) - positives
    return np.where(y == 1, len(y) / (2 * positives), len(y) / (2 * negatives))


def _subsample(values: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    if len(values) <= size:
        return values
    return values[rng.choice(len(values), size=size, replace=False)]


def entropy_attack(member_entropy: np.ndarray, nonmember_entropy: np.ndarray,
                   target_entropy: np.ndarray, seed: int = MIA_SEED,
                   max_fit: int = MAX_FIT) -> float | None:
    """Fraction of ``target`` the fitted attack calls members; None if a set is empty."""
    if len(member_entropy) == 0 or len(nonmember_entropy) == 0 or len(target_entropy) == 0:
        return None
    rng = np.random.default_rng(seed)
    members = _subsample(np.asarray(member_entropy, dtype=np.float64), max_fit, rng)
    nonmembers = _subsample(np.asarray(nonmember_entropy, dtype=np.float64), max_fit, rng)
    x = np.concatenate([members, nonmembers])
    y = np.concatenate([np.ones(len(members)), np.zeros(len(nonmembers))])
    weight, intercept = fit_logistic_1d(x, y, _balanced_weights(y))
    return float(_predict(weight, intercept, target_entropy).mean())


def loss_threshold_attack(forget_loss: np.ndarray, nonmember_loss: np.ndarray,
                          seed: int = MIA_SEED, max_samples: int = MAX_SAMPLES,
                          folds: int = FOLDS) -> float | None:
    """Cross-validated accuracy of telling forget losses from non-member losses (balanced)."""
    n = min(len(forget_loss), len(nonmember_loss), max_samples)
    folds = min(folds, n)
    if folds < 2:
        return None
    rng = np.random.default_rng(seed)
    forget = _subsample(np.asarray(forget_loss, dtype=np.float64), n, rng)
    nonmember = _subsample(np.asarray(nonmember_loss, dtype=np.float64), n, rng)
    # log(loss) spreads the near-zero losses of members that a raw scale would squash.
    x = np.log(np.concatenate([forget, nonmember]) + 1e-12)
    y = np.concatenate([np.ones(n), np.zeros(n)])
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = []
    for train, test in splitter.split(x.reshape(-1, 1), y):
        weight, intercept = fit_logistic_1d(x[train], y[train])
        scores.append((_predict(weight, intercept, x[test]) == (y[test] == 1)).mean())
    return float(np.mean(scores))


def request_membership(train_entropy: np.ndarray, train_loss: np.ndarray,
                       test_entropy: np.ndarray, test_loss: np.ndarray,
                       forget: np.ndarray, retain: np.ndarray, test_forget: np.ndarray,
                       has_classes: bool, seed: int = MIA_SEED) -> dict:
    """Both attacks for one model and one request's named sets (boolean masks)."""
    nonmembers = test_forget if has_classes else np.ones(len(test_loss), dtype=bool)
    return {
        "entropy_forget_member_rate": entropy_attack(
            train_entropy[retain], test_entropy, train_entropy[forget], seed),
        "loss_attack_accuracy": loss_threshold_attack(
            train_loss[forget], test_loss[nonmembers], seed),
        "seed": seed,
    }
