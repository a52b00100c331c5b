"""Model kinds the registry stores: a single CNN ("cnn") or a SISA ensemble ("sisa").

One place turns a model into artifact tensors + metadata and back, so the model cache,
forget-request execution and registration treat every kind alike.
"""

from __future__ import annotations

import torch
from torch import nn

from app.ml.network import ARCHITECTURE, MnistCNN, build_model
from app.ml.sisa import KIND as SISA_KIND
from app.ml.sisa import SisaEnsemble
from app.registry.artifacts import deserialize_state, read_metadata, serialize_state

CNN_KIND = "cnn"
KINDS = (CNN_KIND, SISA_KIND)


def kind_of(model: nn.Module) -> str:
    return SISA_KIND if isinstance(model, SisaEnsemble) else CNN_KIND


def export_model(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict]:
    if isinstance(model, SisaEnsemble):
        state, metadata = model.export()
    elif isinstance(model, MnistCNN):
        state, metadata = model.state_dict(), {"architecture": ARCHITECTURE, "kind": CNN_KIND}
    else:
        raise TypeError(f"cannot store a {type(model).__name__}")
    return {name: tensor.detach().cpu() for name, tensor in state.items()}, metadata


def model_bytes(model: nn.Module) -> tuple[bytes, dict[str, torch.Tensor]]:
    state, metadata = export_model(model)
    return serialize_state(state, metadata), state


def load_model(kind: str, architecture: str, data: bytes) -> nn.Module:
    state = deserialize_state(data)
    if kind == SISA_KIND:
        return SisaEnsemble.from_export(state, read_metadata(data))
    if kind != CNN_KIND:
        raise ValueError(f"unknown model kind {kind!r}")
    model = build_model(architecture)
    model.load_state_dict(state)
    return model
