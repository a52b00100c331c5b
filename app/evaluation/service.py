"""Metrics for versions and forget requests, computed from cached penultimate features."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from app.evaluation.features import FeatureCache
from app.evaluation.metrics import forgetting_efficiency, retention_score, set_metrics
from app.ml.data import MnistData
from app.ml.network import OUTPUT_LAYER
from app.unlearning.base import ForgetTarget

NAMED_SETS = ("forget", "retain", "test_forget", "test_retain")


class Evaluator:
    def __init__(self, feature_cache: FeatureCache, device: torch.device):
        self.feature_cache = feature_cache
        self.device = device

    @torch.inference_mode()
    def logits(self, model: nn.Module, backbone_sha256: str,
               data: MnistData) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of every training and test image: cached features through the output layer."""
        features = self.feature_cache.get(backbone_sha256, model, data, self.device)
        output_layer = getattr(model, OUTPUT_LAYER).cpu()
        return output_layer(features.train), output_layer(features.test)

    def version_metrics(self, model: nn.Module, backbone_sha256: str, data: MnistData) -> dict:
        _, test_logits = self.logits(model, backbone_sha256, data)
        return {"test": set_metrics(test_logits, data.test_labels)}

    def request_metrics(self, model: nn.Module, backbone_sha256: str, data: MnistData,
                        target: ForgetTarget) -> dict:
        """Accuracy/loss/per-class/confusion on the four named sets, plus the paper's scores."""
        train_logits, test_logits = self.logits(model, backbone_sha256, data)
        masks = named_set_masks(data, target)
        result: dict = {}
        for name in NAMED_SETS:
            mask = masks[name]
            logits, labels = (train_logits, data.train_labels) if not name.startswith("test") \
                else (test_logits, data.test_labels)
            result[name] = set_metrics(logits[mask], labels[mask])
        forget, retain = result["forget"], result["retain"]
        result["forgetting_efficiency"] = (
            forgetting_efficiency(forget["accuracy"], forget["loss"]) if forget else None
        )
        result["retention_score"] = (
            retention_score(retain["accuracy"], retain["loss"]) if retain else None
        )
        return result


def named_set_masks(data: MnistData, target: ForgetTarget) -> dict[str, torch.Tensor]:
    """forget: targeted training images (all images of a forgotten class, plus listed IDs);
    retain: every other training image; test_forget/test_retain: test images of the
    forgotten classes / of the other classes."""
    classes = torch.tensor(sorted(target.classes), dtype=torch.int64)
    forget = torch.isin(data.train_labels, classes)
    if target.sample_ids:
        forget |= torch.from_numpy(
            np.isin(data.train_ids.numpy(), np.asarray(target.sample_ids, dtype=np.int64))
        )
    test_forget = torch.isin(data.test_labels, classes)
    return {
        "forget": forget,
        "retain": ~forget,
        "test_forget": test_forget,
        "test_retain": ~test_forget,
    }
