"""Train a network on a dataset and describe it with a model card."""

from __future__ import annotations

import datetime as dt
import platform
from pathlib import Path
from typing import Any

import torch

from app.architectures.base import ModelSpec, parameter_count
from app.architectures.mnist_cnn import MNIST_SPEC
from app.ml.data import ImageData
from app.ml.training import TrainingRecipe, accuracy, train_model
from app.registry.artifacts import serialize_state, sha256_bytes, write_model_card


def model_card(spec: ModelSpec, data: ImageData, *, dataset_name: str,
               test_accuracy: float | None, parameters: int, **extra: Any) -> dict[str, Any]:
    """What a version was trained on and how: the card names the dataset by checksum, so
    that a model is never registered against data it was not trained on."""
    return {
        "architecture": spec.architecture,
        "num_classes": spec.num_classes,
        "image_shape": list(spec.image_shape),
        "class_names": list(data.class_names),
        "parameters": parameters,
        "dataset": dataset_name,
        "dataset_checksum": data.checksum,
        "train_size": data.num_train,
        "test_accuracy": test_accuracy,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        **extra,
    }


def train_base_model(data: ImageData, recipe: TrainingRecipe, device: torch.device,
                     show_bar: bool = True, spec: ModelSpec = MNIST_SPEC,
                     dataset_name: str = "mnist",
                     ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    model = train_model(data.train_images, data.train_labels, recipe, device=device,
                        show_bar=show_bar, spec=spec)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    metadata = {**spec.to_metadata(), "kind": "cnn"}
    card = model_card(
        spec, data, dataset_name=dataset_name,
        test_accuracy=accuracy(model, data.test_images, data.test_labels, device),
        parameters=parameter_count(model),
        training_recipe=recipe.to_dict(), seed=recipe.seed,
        trained_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        sha256=sha256_bytes(serialize_state(state, metadata)),
    )
    return state, card


def export_model(state: dict[str, torch.Tensor], card: dict[str, Any], path: Path) -> None:
    """Write weights and model card side by side (the card's sha256 covers the weights)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = ModelSpec.from_metadata(card)
    payload = serialize_state(state, {**spec.to_metadata(), "kind": "cnn"})
    if sha256_bytes(payload) != card["sha256"]:
        raise RuntimeError("model card sha256 does not match the serialized weights")
    path.write_bytes(payload)
    write_model_card(path.with_suffix(".json"), card)
