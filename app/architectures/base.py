"""What every hosted network is: a feature extractor followed by one linear output layer.

The split is what keeps output-layer methods and metrics fast for every architecture:
output dampening changes only the output layer, so the features of 70,000 images are
computed once per backbone and each metric pass is one matrix product.

A network is described by a ``ModelSpec`` (architecture name, class count, input shape),
stored in each artifact's metadata, so any stored version can be rebuilt exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, cast

import torch
from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    architecture: str
    num_classes: int
    image_shape: tuple[int, int, int]  # (channels, height, width)

    def to_metadata(self) -> dict:
        return {"architecture": self.architecture, "num_classes": self.num_classes,
                "image_shape": list(self.image_shape)}

    @classmethod
    def from_metadata(cls, metadata: dict, architecture: str | None = None) -> "ModelSpec":
        # Artifacts written before models could be brought were the 10-class MNIST CNN.
        return cls(architecture=architecture or metadata.get("architecture", "mnist-cnn"),
                   num_classes=int(metadata.get("num_classes", 10)),
                   image_shape=tuple(metadata.get("image_shape", (1, 28, 28))))


class ImageClassifier(nn.Module):
    """``forward(x) = output_layer(features(x))``. Subclasses build their layers, name the
    output layer's attribute path in ``output_layer_name`` and implement ``features``."""

    output_layer_name: ClassVar[str]

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def output_layer(self) -> nn.Linear:
        return cast(nn.Linear, self.get_submodule(self.output_layer_name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_layer(self.features(x))


class ArchitectureError(ValueError):
    """An architecture that does not exist, or does not fit a dataset or a set of weights."""


@dataclass(frozen=True)
class Architecture:
    name: str
    description: str
    build: Callable[[ModelSpec], ImageClassifier]
    # Why the architecture cannot take images of this shape, or None when it can.
    check_shape: Callable[[tuple[int, int, int]], str | None]
    aliases: tuple[str, ...] = ()
    # (their prefix, ours): tensor names of weights saved from the original torchvision
    # model that this service's module names differently.
    imported_prefixes: tuple[tuple[str, str], ...] = ()


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
