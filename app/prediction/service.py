"""Turn request payloads into a checked image batch, and a batch into predictions.

Images must have the shape of the model's dataset, ``(channels, height, width)``; one-channel
images may be sent as plain ``H x W`` arrays (as MNIST clients always have)."""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from app.core.errors import InvalidInputError, PayloadTooLargeError

ImageShape = tuple[int, int, int]


def _expected(shape: ImageShape) -> tuple[int, ...]:
    return shape[1:] if shape[0] == 1 else shape


def batch_from_instances(instances: list, limit: int, shape: ImageShape) -> np.ndarray:
    """Check a list of images (shape, range, finiteness) and stack them as [N, C, H, W]."""
    _check_count(len(instances), limit, "instances")
    expected = _expected(shape)
    try:
        batch = np.asarray(instances, dtype=np.float32)
    except (ValueError, TypeError):
        batch = None
    if batch is not None and shape[0] == 1 and batch.shape[1:] == shape:
        batch = batch[:, 0]  # one channel sent as 1 x H x W
    if batch is None or batch.shape[1:] != expected:
        for index, instance in enumerate(instances):
            try:
                found = np.shape(np.asarray(instance, dtype=object))
            except (ValueError, TypeError):  # ragged rows
                found = "ragged"
            if found != expected and not (shape[0] == 1 and found == shape):
                raise InvalidInputError(
                    f"instances[{index}] has shape {found}; expected {expected}",
                    f"instances[{index}]",
                )
        raise InvalidInputError(f"instances must be {'x'.join(map(str, expected))} arrays of "
                                f"numbers", "instances")
    flat = batch.reshape(batch.shape[0], -1)
    finite = np.isfinite(flat).all(axis=1)
    if not finite.all():
        index = int(np.flatnonzero(~finite)[0])
        raise InvalidInputError(f"instances[{index}] contains NaN or infinite values",
                                f"instances[{index}]")
    in_range = ((flat >= 0.0) & (flat <= 1.0)).all(axis=1)
    if not in_range.all():
        index = int(np.flatnonzero(~in_range)[0])
        raise InvalidInputError(f"instances[{index}] has pixel values outside [0, 1]",
                                f"instances[{index}]")
    return batch.reshape((batch.shape[0], *shape))


def batch_from_pngs(images: list[str], limit: int, shape: ImageShape) -> np.ndarray:
    """Decode base64 PNGs of the model's size to [0, 1] floats; colour is converted to
    grayscale for one-channel models, anything to RGB for three-channel ones."""
    _check_count(len(images), limit, "images")
    channels, height, width = shape
    mode = {1: "L", 3: "RGB"}.get(channels)
    if mode is None:
        raise InvalidInputError(f"this model takes {channels}-channel images, which PNG "
                                f"input cannot carry; send instances", "images")
    batch = np.empty((len(images), channels, height, width), dtype=np.float32)
    for index, encoded in enumerate(images):
        field = f"images[{index}]"
        try:
            if encoded.startswith("data:"):  # a data URL, as browsers write them
                prefix, _, encoded = encoded.partition(",")
                if not prefix.endswith(";base64"):
                    raise InvalidInputError(f"{field} is a data URL without ';base64'", field)
            raw = base64.b64decode(encoded, validate=True)
            with Image.open(io.BytesIO(raw)) as image:
                if image.format != "PNG":
                    raise InvalidInputError(f"{field} is {image.format}, not PNG", field)
                if image.size != (width, height):
                    raise InvalidInputError(
                        f"{field} is {image.size[0]}x{image.size[1]}; expected "
                        f"{width}x{height}", field)
                pixels = np.asarray(image.convert(mode), dtype=np.float32) / 255.0
            batch[index] = pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)
        except (binascii.Error, ValueError):
            raise InvalidInputError(f"{field} is not valid base64", field) from None
        except (UnidentifiedImageError, OSError):
            raise InvalidInputError(f"{field} is not a readable PNG image", field) from None
    return batch


def _check_count(count: int, limit: int, field: str) -> None:
    if count == 0:
        raise InvalidInputError(f"{field} is empty", field)
    if count > limit:
        raise PayloadTooLargeError(f"{count} {field} exceed the batch limit of {limit}", field)


@torch.inference_mode()
def predict(model: nn.Module, batch: np.ndarray, device: torch.device) -> tuple[list[int], list[list[float]]]:
    x = torch.from_numpy(batch).to(device)
    probabilities = torch.softmax(model(x), dim=1).cpu()
    return probabilities.argmax(dim=1).tolist(), probabilities.tolist()
