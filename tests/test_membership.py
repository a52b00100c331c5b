"""Membership inference attacks on synthetic inputs whose answer is known."""

import numpy as np
import pytest
import torch

from app.evaluation.membership import (
    auc,
    auc_with_interval,
    entropy_attack,
    loss_threshold_attack,
    request_membership,
    softmax_entropy,
)


def test_entropy_attack_separable():
    rng = np.random.default_rng(1)
    members = rng.uniform(0.0, 0.1, 2000)      # confident on training images
    nonmembers = rng.uniform(1.0, 2.0, 2000)   # unsure on unseen images
    assert entropy_attack(members, nonmembers, rng.uniform(0.0, 0.1, 500)) == 1.0
    assert entropy_attack(members, nonmembers, rng.uniform(1.0, 2.0, 500)) == 0.0


def test_entropy_attack_is_seeded_and_balanced():
    rng = np.random.default_rng(2)
    members = rng.normal(0.0, 1.0, 8000)
    nonmembers = rng.normal(0.0, 1.0, 1000)  # same distribution, unbalanced counts
    target = rng.normal(0.0, 1.0, 1000)
    rate = entropy_attack(members, nonmembers, target, seed=3)
    assert rate == entropy_attack(members, nonmembers, target, seed=3)
    # Inseparable: balanced weights keep the attack from calling everything a member.
    assert 0.1 < rate < 0.9
    assert entropy_attack(members, nonmembers, np.array([])) is None


def test_loss_attack_separable_and_inseparable():
    rng = np.random.default_rng(4)
    separable = loss_threshold_attack(rng.uniform(0.001, 0.01, 600), rng.uniform(1.0, 5.0, 3000))
    assert separable == 1.0
    same = loss_threshold_attack(rng.exponential(1.0, 3000), rng.exponential(1.0, 3000))
    assert abs(same - 0.5) < 0.05
    assert loss_threshold_attack(np.array([0.1]), np.array([1.0])) is None


def test_request_membership_on_logits():
    torch.manual_seed(0)
    confident = torch.zeros(300, 10)
    confident[torch.arange(300), torch.arange(300) % 10] = 20.0
    unsure = torch.randn(200, 10) * 0.1
    train_logits = confident
    train_labels = torch.arange(300) % 10
    test_logits, test_labels = unsure, torch.arange(200) % 10
    forget = torch.zeros(300, dtype=torch.bool)
    forget[:50] = True
    loss = torch.nn.functional.cross_entropy
    result = request_membership(
        softmax_entropy(train_logits), loss(train_logits, train_labels, reduction="none").numpy(),
        softmax_entropy(test_logits), loss(test_logits, test_labels, reduction="none").numpy(),
        forget.numpy(), (~forget).numpy(), np.zeros(200, dtype=bool), False)
    # Still remembered: the forget set is told from never-seen images every time.
    assert result["entropy_auc"]["value"] == 1.0 and result["entropy_auc"]["ci95"] == [1.0, 1.0]
    assert result["loss_auc"]["value"] == 1.0
    assert abs(softmax_entropy(torch.zeros(1, 10))[0] - np.log(10)) < 1e-12


def test_one_feature_logistic_regression_matches_scikit_learn():
    """The attacks' Newton solver minimises scikit-learn's objective (C = 1, intercept not
    penalised, optional balanced weights): same coefficients on random 1-D problems."""
    from sklearn.linear_model import LogisticRegression

    from app.evaluation.membership import _balanced_weights, fit_logistic_1d

    rng = np.random.default_rng(3)
    for _ in range(4):
        n1, n0 = rng.integers(50, 3000, size=2)
        x = np.concatenate([rng.normal(0, 1, n1), rng.normal(rng.uniform(0, 3), 1.5, n0)])
        x *= rng.uniform(0.01, 100)
        y = np.concatenate([np.ones(n1), np.zeros(n0)])
        for balanced in (False, True):
            reference = LogisticRegression(class_weight="balanced" if balanced else None,
                                           tol=1e-10, max_iter=10_000).fit(x.reshape(-1, 1), y)
            weight, intercept = fit_logistic_1d(x, y, _balanced_weights(y) if balanced else None)
            assert weight == pytest.approx(reference.coef_[0, 0], rel=1e-5, abs=1e-9)
            assert intercept == pytest.approx(reference.intercept_[0], rel=1e-5, abs=1e-7)


def test_auc_matches_scikit_learn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(5)
    positive = np.round(rng.normal(0.3, 1.0, 700), 1)  # rounding makes ties
    negative = np.round(rng.normal(0.0, 1.0, 400), 1)
    expected = roc_auc_score(np.r_[np.ones(700), np.zeros(400)], np.r_[positive, negative])
    assert auc(positive, negative) == pytest.approx(expected, abs=1e-12)
    assert auc(positive, np.array([])) is None


def test_auc_interval_covers_chance_for_one_distribution_and_is_seeded():
    rng = np.random.default_rng(6)
    forget, nonmember = rng.normal(0, 1, 600), rng.normal(0, 1, 3000)
    same = auc_with_interval(forget, nonmember, seed=2)
    low, high = same["ci95"]
    assert low < 0.5 < high and high - low < 0.15
    assert same == auc_with_interval(forget, nonmember, seed=2)  # reproducible
    assert same["forget_count"] == 600 and same["nonmember_count"] == 1000  # subsampled
    shifted = auc_with_interval(rng.normal(1.0, 1, 600), nonmember, seed=2)
    assert shifted["ci95"][0] > 0.7
