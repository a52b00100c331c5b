"""The one place where the CNN architecture is defined.

conv 32 3x3 -> ReLU -> max-pool 2 -> conv 64 3x3 -> ReLU -> max-pool 2 -> dropout
-> dense 128 -> ReLU -> dense 10  (225,034 parameters).

``features`` returns the penultimate activations (after the 128-unit ReLU). Everything
downstream of them is the output layer ``fc2``, so methods that change only ``fc2``
(output dampening) can be evaluated from cached features without rerunning the convs.
"""

from __future__ import annotations

import torch
from torch import nn

ARCHITECTURE = "mnist-cnn-v1"
NUM_CLASSES = 10
IMAGE_SHAPE = (1, 28, 28)
OUTPUT_LAYER = "fc2"  # name of the final dense layer: weight [10, 128], bias [10]


class MnistCNN(nn.Module):
    def __init__(self, dropout: float = 0.25) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, kernel_size=3)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.pool = nn.MaxPool2d(2)
        self.dropout = nn.Dropout(dropout)
        self.fc1 = nn.Linear(64 * 5 * 5, 128)
        self.fc2 = nn.Linear(128, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations, shape [N, 128]."""
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = self.dropout(x)
        return torch.relu(self.fc1(torch.flatten(x, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.features(x))


def build_model(architecture: str = ARCHITECTURE) -> MnistCNN:
    if architecture != ARCHITECTURE:
        raise ValueError(f"unknown architecture {architecture!r}; this service knows {ARCHITECTURE!r}")
    return MnistCNN()


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
