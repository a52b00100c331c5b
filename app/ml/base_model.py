"""Train the base model and describe it with a model card."""

from __future__ import annotations

import datetime as dt
import platform
from pathlib import Path
from typing import Any

import torch

from app.ml.data import ImageData
from app.ml.network import ARCHITECTURE, parameter_count
from app.ml.training import TrainingRecipe, accuracy, train_model
from app.registry.artifacts import serialize_state, sha256_bytes, write_model_card


def train_base_model(data: ImageData, recipe: TrainingRecipe, device: torch.device,
                     show_bar: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    model = train_model(data.train_images, data.train_labels, recipe, device=device,
                        show_bar=show_bar)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    card = {
        "architecture": ARCHITECTURE,
        "layers": "conv32-3x3 relu maxpool2 conv64-3x3 relu maxpool2 dropout0.25 "
                  "dense128 relu dense10",
        "parameters": parameter_count(model),
        "training_recipe": recipe.to_dict(),
        "seed": recipe.seed,
        "dataset": "MNIST (torchvision), train split 60,000 / test 10,000, pixels in [0, 1]",
        "dataset_checksum": data.checksum,
        "train_size": data.num_train,
        "test_accuracy": accuracy(model, data.test_images, data.test_labels, device),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "trained_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "sha256": sha256_bytes(serialize_state(state, {"architecture": ARCHITECTURE,
                                                       "kind": "cnn"})),
    }
    return state, card


def export_model(state: dict[str, torch.Tensor], card: dict[str, Any], path: Path) -> None:
    """Write weights and model card side by side (the card's sha256 covers the weights)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = serialize_state(state, {"architecture": ARCHITECTURE, "kind": "cnn"})
    if sha256_bytes(payload) != card["sha256"]:
        raise RuntimeError("model card sha256 does not match the serialized weights")
    path.write_bytes(payload)
    write_model_card(path.with_suffix(".json"), card)
