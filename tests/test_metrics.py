"""Metric formulas on hand-made logits."""

import math

import pytest
import torch

from app.evaluation.metrics import forgetting_efficiency, retention_score, set_metrics


def test_set_metrics_counts_and_loss():
    # Three images: true classes 0, 1, 1; predictions 0, 1, 0.
    logits = torch.tensor([[2.0, 0.0] + [-50.0] * 8,
                           [0.0, 3.0] + [-50.0] * 8,
                           [1.0, 0.0] + [-50.0] * 8])
    labels = torch.tensor([0, 1, 1])
    m = set_metrics(logits, labels)
    assert m["count"] == 3
    assert m["accuracy"] == pytest.approx(2 / 3)
    expected_loss = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-3))
                     + math.log(1 + math.exp(1))) / 3
    assert m["loss"] == pytest.approx(expected_loss, rel=1e-6)
    assert m["per_class_accuracy"][0] == 1.0
    assert m["per_class_accuracy"][1] == 0.5
    assert m["per_class_accuracy"][2] is None
    assert m["confusion_matrix"][1][0] == 1 and m["confusion_matrix"][1][1] == 1
    assert sum(map(sum, m["confusion_matrix"])) == 3


def test_empty_set_is_none():
    assert set_metrics(torch.empty(0, 10), torch.empty(0, dtype=torch.int64)) is None


def test_paper_scores_and_zero_loss_guard():
    assert forgetting_efficiency(0.121, 1.78) == pytest.approx((1 - 0.121) / 1.78)
    assert retention_score(0.973, 0.08) == pytest.approx(0.973 / 0.08)
    assert forgetting_efficiency(1.0, 0.0) is None
    assert retention_score(1.0, 0.0) is None
    assert retention_score(1.0, float("nan")) is None


def test_one_function_gives_the_paper_scores_from_set_metrics():
    from app.evaluation.metrics import paper_scores

    scores = paper_scores({"accuracy": 0.121, "loss": 1.78}, {"accuracy": 0.9, "loss": 0.3})
    assert scores == {"forgetting_efficiency": pytest.approx((1 - 0.121) / 1.78),
                      "retention_score": pytest.approx(0.9 / 0.3)}
    assert paper_scores(None, None) == {"forgetting_efficiency": None, "retention_score": None}
