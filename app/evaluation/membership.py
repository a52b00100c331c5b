"""Population membership-inference attacks (MIA): can the forget set be told apart from
images the model never saw? Both are seeded, bounded in cost (subsampled, 1-D features)
and reported as an AUC with a bootstrap 95% interval, always for the source version and
the new one side by side (the request's ``before`` and ``after``):

* ``entropy_auc`` — softmax entropy of the forget set versus never-seen images (lower
  entropy = more member-like). It replaces the SSD paper's "fraction of the forget set a
  fitted entropy threshold calls members": on a 99%-accurate MNIST model that fitted
  threshold's slope is about zero and changes sign with the subsample, so the rate landed
  near 12% or 88% by chance, for test images as much as for the forget set. An AUC needs
  no fitted threshold and says "0.5 = indistinguishable" directly.
* ``loss_auc`` — the same with the per-image loss (lower loss = more member-like).

Non-members are the test images of the forgotten classes for a class request (so that
"never seen this class" is compared like for like), otherwise the whole test set.

These are secondary figures: whole-population attacks are known to overstate privacy. The
per-sample likelihood-ratio test (``app.verification.lira``) is the deciding evidence.
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


BOOTSTRAP_RESAMPLES = 100
MAX_AUC_SAMPLES = 1_000


def auc(positive: np.ndarray, negative: np.ndarray) -> float | None:
    """P(score of a random positive > score of a random negative) + half the ties (the
    Mann-Whitney U statistic, normalised); None when a side is empty."""
    positive = np.asarray(positive, dtype=np.float64).ravel()
    negative = np.sort(np.asarray(negative, dtype=np.float64).ravel())
    if len(positive) == 0 or len(negative) == 0:
        return None
    below = np.searchsorted(negative, positive, side="left")
    below_or_equal = np.searchsorted(negative, positive, side="right")
    return float((below + below_or_equal).sum() / (2.0 * len(positive) * len(negative)))


def auc_with_interval(positive: np.ndarray, negative: np.ndarray, seed: int = MIA_SEED,
                      resamples: int = BOOTSTRAP_RESAMPLES,
                      max_samples: int = MAX_AUC_SAMPLES) -> dict | None:
    """AUC (positives scored higher = more member-like) with a percentile bootstrap 95%
    interval, both sides resampled with replacement. Sides are first subsampled (seeded) to
    at most ``max_samples``, so the cost is bounded (a few milliseconds).

    All resamples are ranked at once: scores are replaced by their ranks in the pooled
    sample, each resample's negatives are offset into their own band of one sorted array,
    and one ``searchsorted`` counts, for every resampled positive, the negatives below it."""
    rng = np.random.default_rng(seed)
    positive = _subsample(np.asarray(positive, dtype=np.float64).ravel(), max_samples, rng)
    negative = _subsample(np.asarray(negative, dtype=np.float64).ravel(), max_samples, rng)
    value = auc(positive, negative)
    if value is None:
        return None
    n_pos, n_neg = len(positive), len(negative)
    pooled = np.unique(np.concatenate([positive, negative]))
    pos_rank = np.searchsorted(pooled, positive).astype(np.int64)
    neg_rank = np.searchsorted(pooled, negative).astype(np.int64)
    band = len(pooled) + 1
    offsets = (np.arange(resamples, dtype=np.int64) * band)[:, None]
    pos_draw = pos_rank[rng.integers(0, n_pos, size=(resamples, n_pos))] + offsets
    neg_draw = np.sort(neg_rank[rng.integers(0, n_neg, size=(resamples, n_neg))] + offsets,
                       axis=None)
    row_start = np.arange(resamples, dtype=np.int64)[:, None] * n_neg
    below = np.searchsorted(neg_draw, pos_draw, side="left") - row_start
    below_or_equal = np.searchsorted(neg_draw, pos_draw, side="right") - row_start
    samples = (below + below_or_equal).sum(axis=1) / (2.0 * n_pos * n_neg)
    low, high = np.percentile(samples, [2.5, 97.5])
    return {"value": round(value, 4), "ci95": [round(float(low), 4), round(float(high), 4)],
            "forget_count": n_pos, "nonmember_count": n_neg}


def request_membership(train_entropy: np.ndarray, train_loss: np.ndarray,
                       test_entropy: np.ndarray, test_loss: np.ndarray,
                       forget: np.ndarray, retain: np.ndarray, test_forget: np.ndarray,
                       has_classes: bool, seed: int = MIA_SEED) -> dict:
    """Both population attacks for one model and one request's named sets (boolean masks):
    forget set versus never-seen images, as AUCs with bootstrap intervals (0.5 =
    indistinguishable). Members have lower entropy and lower loss, hence the minus signs."""
    nonmembers = test_forget if has_classes else np.ones(len(test_loss), dtype=bool)
    return {
        "entropy_auc": auc_with_interval(-train_entropy[forget], -test_entropy[nonmembers],
                                         seed),
        "loss_auc": auc_with_interval(-train_loss[forget], -test_loss[nonmembers], seed),
        "nonmembers": "test images of the forgotten classes" if has_classes else "test images",
        "seed": seed,
    }
