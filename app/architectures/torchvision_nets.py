"""torchvision architectures adapted to small images (28x28 to 64x64).

ImageNet stems shrink a 224-pixel image 4x before the first block; on a 28-pixel image that
leaves almost nothing to learn from. As is usual for CIFAR-sized data, the stem keeps the
resolution: ResNet-18's first convolution becomes 3x3 with stride 1 and its max-pool goes;
MobileNetV3-Small's first convolution gets stride 1. The input channels and the class count
come from the dataset.

Layer names are torchvision's own (``conv1``, ``layer1``..., ``fc``), so weights trained
elsewhere with the same small-image stem import unchanged. torchvision is imported only when
one of these networks is built: it costs seconds at process start.
"""

from __future__ import annotations

import torch
from torch import nn

from app.architectures.base import Architecture, ImageClassifier, ModelSpec

MIN_SIDE = 16


class ResNet18(ImageClassifier):
    output_layer_name = "fc"
    # torchvision's children, registered by add_module below (typed here for mypy).
    conv1: nn.Module
    bn1: nn.Module
    relu: nn.Module
    maxpool: nn.Module
    layer1: nn.Module
    layer2: nn.Module
    layer3: nn.Module
    layer4: nn.Module
    avgpool: nn.Module

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        from torchvision.models import resnet18

        net = resnet18(num_classes=spec.num_classes)
        net.conv1 = nn.Conv2d(spec.image_shape[0], 64, kernel_size=3, stride=1, padding=1,
                              bias=False)
        net.maxpool = nn.Identity()
        # The network's own children become ours: state-dict keys stay torchvision's.
        for name, module in net.named_children():
            self.add_module(name, module)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally pooled activations of the last block, shape [N, 512]."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.maxpool(x)))))
        return torch.flatten(self.avgpool(x), 1)


class MobileNetV3Small(ImageClassifier):
    output_layer_name = "classifier.3"

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        from torchvision.models import mobilenet_v3_small

        net = mobilenet_v3_small(num_classes=spec.num_classes)
        stem = net.features[0][0]
        net.features[0][0] = nn.Conv2d(spec.image_shape[0], stem.out_channels,
                                       kernel_size=3, stride=1, padding=1, bias=False)
        # torchvision's ``features`` would shadow our features(); weights named the
        # torchvision way import through the architecture's key prefixes.
        self.blocks = net.features
        self.avgpool = net.avgpool
        self.classifier = net.classifier

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 1024-unit hidden layer before the classifier's last linear layer."""
        x = torch.flatten(self.avgpool(self.blocks(x)), 1)
        return self.classifier[2](self.classifier[1](self.classifier[0](x)))


def _check_small_image(shape: tuple[int, int, int]) -> str | None:
    if min(shape[1:]) < MIN_SIDE:
        return f"images must be at least {MIN_SIDE}x{MIN_SIDE}; these are {shape[1]}x{shape[2]}"
    return None


RESNET18 = Architecture(
    name="resnet18",
    description="torchvision ResNet-18 with a small-image stem (3x3 stride-1 conv, no max-pool).",
    build=ResNet18,
    check_shape=_check_small_image,
)

MOBILENET_V3_SMALL = Architecture(
    name="mobilenet-v3-small",
    description="torchvision MobileNetV3-Small with a stride-1 stem (1.5M parameters).",
    build=MobileNetV3Small,
    check_shape=_check_small_image,
    imported_prefixes=(("features.", "blocks."),),
)
