"""Turn request payloads into a checked image batch, and a batch into predictions.

Every image shape here comes from ``image_shape()``: one place to ask which
(channels, height, width) a version's model takes, so hosting another dataset's model
changes that function, not the parsers.
"""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from app.core.errors import InvalidInputError, PayloadTooLargeError
from app.ml.device import to_device

# The hosted MNIST CNN's input: one grey channel of 28x28 pixels.
MNIST_IMAGE_SHAPE = (1, 28, 28)


def image_shape(version: object | None = None) -> tuple[int, int, int]:
    """(channels, height, width) of the images the given model version takes: its model
    card's, which registration writes from the model's dataset (versions registered before
    models could be brought are the MNIST CNN)."""
    card = getattr(version, "model_card", None) or {}
    return tuple(card.get("image_shape") or MNIST_IMAGE_SHAPE)


def num_classes(version: object | None = None) -> int:
    """How many classes the given model version scores (its output layer's width)."""
    card = getattr(version, "model_card", None) or {}
    return int(card.get("num_classes") or 10)


def class_names(version: object | None = None) -> list[str] | None:
    """The class names of the version's dataset, by label index (None when unrecorded)."""
    card = getattr(version, "model_card", None) or {}
    return list(card.get("class_names") or []) or None


def instance_shape(shape: tuple[int, int, int]) -> tuple[int, ...]:
    """How one image is written in JSON: (H, W) for one channel, (C, H, W) otherwise."""
    return tuple(shape[1:]) if shape[0] == 1 else tuple(shape)


def batch_from_instances(instances: list, limit: int,
                         shape: tuple[int, int, int] = MNIST_IMAGE_SHAPE) -> np.ndarray:
    """Check a list of float arrays in [0, 1] (shape, range, finiteness) and stack them
    into an [N, C, H, W] float32 batch."""
    _check_count(len(instances), limit, "instances")
    expected = instance_shape(shape)
    axes = tuple(range(1, len(expected) + 1))
    try:
        batch = np.asarray(instances, dtype=np.float32)
    except (ValueError, TypeError):
        batch = None
    if batch is None or batch.shape[1:] != expected:
        for index, instance in enumerate(instances):
            found: tuple[int, ...] | str
            try:
                found = np.shape(np.asarray(instance, dtype=object))
            except (ValueError, TypeError):  # ragged rows
                found = "ragged"
            if found != expected:
                raise InvalidInputError(
                    f"instances[{index}] has shape {found}; expected {expected}",
                    f"instances[{index}]",
                )
        raise InvalidInputError(
            f"instances must be {'x'.join(map(str, expected))} arrays of numbers", "instances")
    finite = np.isfinite(batch).all(axis=axes)
    if not finite.all():
        index = int(np.flatnonzero(~finite)[0])
        raise InvalidInputError(f"instances[{index}] contains NaN or infinite values",
                                f"instances[{index}]")
    in_range = ((batch >= 0.0) & (batch <= 1.0)).all(axis=axes)
    if not in_range.all():
        index = int(np.flatnonzero(~in_range)[0])
        raise InvalidInputError(f"instances[{index}] has pixel values outside [0, 1]",
                                f"instances[{index}]")
    return batch.reshape((len(batch), *shape))


def batch_from_pngs(images: list[str], limit: int,
                    shape: tuple[int, int, int] = MNIST_IMAGE_SHAPE) -> np.ndarray:
    """Decode base64 PNGs of the model's size to an [N, C, H, W] batch of [0, 1] floats
    (colour is converted to grayscale for one-channel models, grey to RGB for three)."""
    _check_count(len(images), limit, "images")
    channels, height, width = shape
    mode = {1: "L", 3: "RGB"}.get(channels)
    if mode is None:
        raise InvalidInputError(f"this model takes {channels}-channel images, which PNG "
                                f"input cannot carry; send instances", "images")
    batch = np.empty((len(images), height, width, channels), dtype=np.float32)
    for index, encoded in enumerate(images):
        field = f"images[{index}]"
        try:
            if encoded.startswith("data:"):  # a data URL, as browsers write them
                prefix, _, encoded = encoded.partition(",")
                if not prefix.endswith(";base64"):
                    raise InvalidInputError(f"{field} is a data URL without ';base64'", field)
            raw = base64.b64decode(encoded, validate=True)
            # Image.open reads only the header; a header claiming a huge image raises
            # DecompressionBombError there (refused below), and anything but 28x28 is
            # refused before a pixel is decoded.
            with Image.open(io.BytesIO(raw)) as image:
                if image.format != "PNG":
                    raise InvalidInputError(f"{field} is {image.format}, not PNG", field)
                if image.size != (width, height):
                    raise InvalidInputError(
                        f"{field} is {image.size[0]}x{image.size[1]}; "
                        f"expected {width}x{height}", field)
                pixels = np.asarray(image.convert(mode), dtype=np.float32) / 255.0
                batch[index] = pixels.reshape(height, width, channels)
        except Image.DecompressionBombError:
            raise InvalidInputError(f"{field} claims an image far larger than "
                                    f"{width}x{height}", field) from None
        except (binascii.Error, ValueError):
            raise InvalidInputError(f"{field} is not valid base64", field) from None
        except (UnidentifiedImageError, OSError):
            raise InvalidInputError(f"{field} is not a readable PNG image", field) from None
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


def _check_count(count: int, limit: int, field: str) -> None:
    if count == 0:
        raise InvalidInputError(f"{field} is empty", field)
    if count > limit:
        raise PayloadTooLargeError(f"{count} {field} exceed the batch limit of {limit}", field)


@torch.inference_mode()
def forward_probabilities(model: nn.Module, batch: np.ndarray,
                          device: torch.device) -> np.ndarray:
    """Class probabilities [N, classes] (float32, on the host) of an [N, C, H, W] batch.

    ``batch`` is float32 in [0, 1] or uint8 grey levels 0-255; uint8 travels to the device
    as bytes (a quarter of the float traffic) and is scaled to [0, 1] there."""
    x = to_device(torch.from_numpy(batch), device)
    if x.dtype == torch.uint8:
        x = x.to(torch.float32).div_(255.0)
    return torch.softmax(model(x), dim=1).cpu().numpy()


def predict(model: nn.Module, batch: np.ndarray, device: torch.device) -> tuple[list[int], list[list[float]]]:
    """Labels and probabilities as lists, for JSON answers."""
    probabilities = forward_probabilities(model, batch, device)
    return probabilities.argmax(axis=1).tolist(), probabilities.tolist()
