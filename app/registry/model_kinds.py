"""Model kinds the registry stores: a single network ("cnn", of any architecture) or a
SISA ensemble ("sisa").

One place turns a model into artifact tensors + metadata and back, so the model cache,
forget-request execution and registration treat every kind alike. The metadata carries the
network's ``ModelSpec`` (architecture, class count, input shape) so that an artifact can be
rebuilt without looking anything up.
"""

from __future__ import annotations

import torch
from torch import nn

from app.architectures.base import ImageClassifier, ModelSpec
from app.architectures.catalog import get_architecture, load_weights
from app.ml.sisa import KIND as SISA_KIND
from app.ml.sisa import SisaEnsemble
from app.registry.artifacts import backbone_sha256, deserialize_state, read_metadata, serialize_state

CNN_KIND = "cnn"  # one network, whatever its architecture (the name predates ResNets)
KINDS = (CNN_KIND, SISA_KIND)


def kind_of(model: nn.Module) -> str:
    return SISA_KIND if isinstance(model, SisaEnsemble) else CNN_KIND


def spec_of(model: nn.Module) -> ModelSpec:
    if isinstance(model, (ImageClassifier, SisaEnsemble)):
        return model.spec
    raise TypeError(f"cannot store a {type(model).__name__}")


def export_model(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict]:
    if isinstance(model, SisaEnsemble):
        state, metadata = model.export()
    elif isinstance(model, ImageClassifier):
        state = model.state_dict()
        metadata = {**model.spec.to_metadata(), "kind": CNN_KIND}
    else:
        raise TypeError(f"cannot store a {type(model).__name__}")
    return {name: tensor.detach().cpu() for name, tensor in state.items()}, metadata


def model_bytes(model: nn.Module) -> tuple[bytes, dict[str, torch.Tensor]]:
    state, metadata = export_model(model)
    return serialize_state(state, metadata), state


def model_backbone_sha256(model: nn.Module, state: dict[str, torch.Tensor]) -> str:
    """The backbone hash of a model's exported state (see ``artifacts.backbone_sha256``)."""
    if not isinstance(model, ImageClassifier):
        # An ensemble has no one backbone (its features are never cached): hash it all.
        return backbone_sha256(state, output_layer="")
    return backbone_sha256(state, model.output_layer_name)


def load_model(kind: str, architecture: str, data: bytes) -> nn.Module:
    state = deserialize_state(data)
    metadata = read_metadata(data)
    if kind == SISA_KIND:
        return SisaEnsemble.from_export(state, metadata)
    if kind != CNN_KIND:
        raise ValueError(f"unknown model kind {kind!r}")
    spec = ModelSpec.from_metadata(metadata, get_architecture(architecture).name)
    return load_weights(spec, state)
