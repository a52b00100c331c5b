"""The paper's CNN, for 28x28 images (MNIST, Fashion-MNIST, KMNIST).

conv 32 3x3 -> ReLU -> max-pool 2 -> conv 64 3x3 -> ReLU -> max-pool 2 -> dropout
-> dense 128 -> ReLU -> dense C  (225,034 parameters for one channel and ten classes).

``features`` returns the penultimate activations (after the 128-unit ReLU); the output
layer is ``fc2``. Layer names are those of the shipped base model's weights.
"""

from __future__ import annotations

import torch
from torch import nn

from app.architectures.base import Architecture, ImageClassifier, ModelSpec

NAME = "mnist-cnn"


class MnistCNN(ImageClassifier):
    output_layer_name = "fc2"

    def __init__(self, spec: ModelSpec, dropout: float = 0.25) -> None:
        super().__init__(spec)
        channels = spec.image_shape[0]
        self.conv1 = nn.Conv2d(channels, 32, kernel_size=3)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.pool = nn.MaxPool2d(2)
        self.dropout = nn.Dropout(dropout)
        self.fc1 = nn.Linear(64 * 5 * 5, 128)
        self.fc2 = nn.Linear(128, spec.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations, shape [N, 128]."""
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = self.dropout(x)
        return torch.relu(self.fc1(torch.flatten(x, 1)))


def _check_shape(shape: tuple[int, int, int]) -> str | None:
    if shape[1:] != (28, 28):
        return f"mnist-cnn takes 28x28 images; this dataset's are {shape[1]}x{shape[2]}"
    return None


ARCHITECTURE = Architecture(
    name=NAME,
    description="The paper's small CNN (2 conv + 2 dense layers) for 28x28 images.",
    build=MnistCNN,
    check_shape=_check_shape,
    aliases=("mnist-cnn-v1",),  # the name versions registered before 0006 carry
)

# The shipped model's shape: ten digits, one 28x28 channel.
MNIST_SPEC = ModelSpec(NAME, 10, (1, 28, 28))
