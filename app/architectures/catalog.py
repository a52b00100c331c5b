"""The architectures this service knows, by name."""

from __future__ import annotations

import torch
from torch import nn

from app.architectures import mnist_cnn, torchvision_nets
from app.architectures.base import Architecture, ArchitectureError, ImageClassifier, ModelSpec

ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in (mnist_cnn.ARCHITECTURE, torchvision_nets.RESNET18,
                 torchvision_nets.MOBILENET_V3_SMALL)
}
_BY_ALIAS = {alias: arch for arch in ARCHITECTURES.values() for alias in arch.aliases}


def get_architecture(name: str) -> Architecture:
    arch = ARCHITECTURES.get(name) or _BY_ALIAS.get(name)
    if arch is None:
        raise ArchitectureError(
            f"unknown architecture {name!r}; available: {', '.join(sorted(ARCHITECTURES))}")
    return arch


def check_fits(architecture: str, image_shape: tuple[int, int, int]) -> Architecture:
    """The architecture, if it can take images of ``image_shape``; else ArchitectureError."""
    arch = get_architecture(architecture)
    # tuple(): the shape may come as a JSON list; mypy types the copy as tuple[int, ...].
    reason = arch.check_shape(tuple(image_shape))  # type: ignore[arg-type]
    if reason is not None:
        raise ArchitectureError(f"{arch.name} does not fit this dataset: {reason}")
    return arch


def build_model(spec: ModelSpec) -> ImageClassifier:
    """A freshly initialised network (seed torch first for a reproducible one)."""
    arch = get_architecture(spec.architecture)
    # tuple(): the shape may come as a JSON list; mypy types the copy as tuple[int, ...].
    return arch.build(ModelSpec(arch.name, spec.num_classes, tuple(spec.image_shape)))  # type: ignore[arg-type]


def empty_model(spec: ModelSpec) -> ImageClassifier:
    """The network with uninitialised memory, for weights that are loaded into it next.

    It is built on the meta device and only then given memory: a random initialisation
    would draw from torch's process-wide generator, and networks are built to take weights
    on any thread (a version loaded for predictions, a worker's warm-up, a SISA ensemble)
    while a worker may be training from a seed (retrain, fine-tuning, SISA shards), whose
    result would then depend on when the build happened."""
    with torch.device("meta"):
        model = build_model(spec)
    if any(module._non_persistent_buffers_set for module in model.modules()):
        return build_model(spec)  # buffers no state dict carries need their real values
    return model.to_empty(device="cpu")


def load_weights(spec: ModelSpec, state: dict) -> ImageClassifier:
    """Build the network and load ``state``, refusing tensors that do not fit it (wrong
    names, shapes, or a class count that differs from the dataset's) with a clear message.
    Nothing is drawn from torch's generator (``empty_model``)."""
    model = empty_model(spec)
    expected = model.state_dict()
    for theirs, ours in get_architecture(spec.architecture).imported_prefixes:
        state = {(ours + name[len(theirs):] if name.startswith(theirs) else name): tensor
                 for name, tensor in state.items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s), e.g. {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensor(s), e.g. "
                         f"{', '.join(unexpected[:3])}")
        raise ArchitectureError(f"the weights do not fit {spec.architecture}: "
                                + "; ".join(parts))
    for name, tensor in expected.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            what = ""
            if name.startswith(model.output_layer_name + ".") and state[name].ndim >= 1:
                what = (f" (the weights have {state[name].shape[0]} classes, "
                        f"the dataset {spec.num_classes})")
            raise ArchitectureError(
                f"the weights do not fit {spec.architecture}: {name} has shape "
                f"{tuple(state[name].shape)}, expected {tuple(tensor.shape)}{what}")
    model.load_state_dict(state)
    return model


def is_classifier(model: nn.Module) -> bool:
    return isinstance(model, ImageClassifier)
