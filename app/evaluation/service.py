"""Metrics for versions and forget requests, computed from cached penultimate features
(single CNNs) or from a direct forward pass (SISA ensembles, which have no one backbone)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch
from cachetools import LRUCache
from torch import nn

from app.evaluation.features import FeatureCache
from app.evaluation.membership import request_membership, softmax_entropy
from app.evaluation.metrics import (
    Outcomes,
    RequestMetrics,
    VersionMetrics,
    outcome_metrics,
    paper_scores,
)
from app.ml.data import ImageData
from app.architectures.base import ImageClassifier
from app.ml.device import to_device
from app.ml.targets import ForgetTarget, class_mask

NAMED_SETS = ("forget", "retain", "test_forget", "test_retain")


@dataclass(frozen=True)
class ModelOutcomes:
    train: Outcomes
    test: Outcomes
    # Softmax entropy of every image, for the membership-inference attack.
    train_entropy: np.ndarray
    test_entropy: np.ndarray


class Evaluator:
    """Computes per-image outcomes of a model once (from cached features through the output
    layer) and keeps the latest few, keyed by artifact sha256, so a source version's
    'before' metrics cost nothing on the next request against it."""

    def __init__(self, feature_cache: FeatureCache, device: torch.device, capacity: int = 8):
        self.feature_cache = feature_cache
        self.device = device
        self.capacity = capacity
        self._outcomes: LRUCache[tuple[str, str], ModelOutcomes] = LRUCache(maxsize=capacity)
        self._lock = threading.Lock()  # LRUCache is not thread-safe

    @torch.inference_mode()
    def outcomes(self, model: nn.Module, backbone_sha256: str, data: ImageData,
                 artifact_sha256: str | None = None) -> ModelOutcomes:
        key = (artifact_sha256, data.checksum) if artifact_sha256 else None
        if key is not None:
            with self._lock:
                cached = self._outcomes.get(key)  # a hit counts as a use
            if cached is not None:
                return cached
        if isinstance(model, ImageClassifier):
            features = self.feature_cache.get(backbone_sha256, model, data, self.device)
            output_layer = model.output_layer
            weight = output_layer.weight.detach().cpu()
            bias = output_layer.bias.detach().cpu()
            train_logits = torch.addmm(bias, features.train, weight.T)
            test_logits = torch.addmm(bias, features.test, weight.T)
        else:  # an ensemble: no shared backbone, every image goes through every member
            train_logits = self._forward(model, data.train_images)
            test_logits = self._forward(model, data.test_images)
        result = ModelOutcomes(
            train=Outcomes.from_logits(train_logits, data.train_labels),
            test=Outcomes.from_logits(test_logits, data.test_labels),
            train_entropy=softmax_entropy(train_logits),
            test_entropy=softmax_entropy(test_logits),
        )
        if key is not None:
            with self._lock:
                self._outcomes[key] = result
        return result

    def _forward(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        model = model.to(self.device).eval()
        return torch.cat([model(to_device(images[i : i + 2048], self.device)).cpu()
                          for i in range(0, images.shape[0], 2048)])

    def version_metrics(self, model: nn.Module, backbone_sha256: str, data: ImageData,
                        artifact_sha256: str | None = None) -> VersionMetrics:
        outcomes = self.outcomes(model, backbone_sha256, data, artifact_sha256)
        return {"test": outcome_metrics(outcomes.test)}

    def request_metrics(self, model: nn.Module, backbone_sha256: str, data: ImageData,
                        target: ForgetTarget, artifact_sha256: str | None = None
                        ) -> RequestMetrics:
        """Accuracy/loss/per-class/confusion on the four named sets, plus the paper's scores."""
        outcomes = self.outcomes(model, backbone_sha256, data, artifact_sha256)
        masks = named_set_masks(data, target)
        forget, retain, test_forget, test_retain = (
            outcome_metrics(outcomes.test if name.startswith("test") else outcomes.train,
                            masks[name])
            for name in NAMED_SETS)
        scores = paper_scores(forget, retain)
        return {
            "forget": forget,
            "retain": retain,
            "test_forget": test_forget,
            "test_retain": test_retain,
            "forgetting_efficiency": scores["forgetting_efficiency"],
            "retention_score": scores["retention_score"],
            "membership_inference": request_membership(
                outcomes.train_entropy, outcomes.train.loss, outcomes.test_entropy,
                outcomes.test.loss, masks["forget"], masks["retain"], masks["test_forget"],
                bool(target.classes)),
        }


def named_set_masks(data: ImageData, target: ForgetTarget) -> dict[str, np.ndarray]:
    """forget: targeted training images (all images of a forgotten class, plus listed IDs);
    retain: every other training image; test_forget/test_retain: test images of the
    forgotten classes / of the other classes."""
    forget = target.forget_mask(data).numpy()
    test_forget = class_mask(data.test_labels, target.classes)
    return {
        "forget": forget,
        "retain": ~forget,
        "test_forget": test_forget,
        "test_retain": ~test_forget,
    }
