"""What every format reader returns (``RawDataset``), and the image decoding they share.

Readers check everything they read and raise ``InvalidInputError`` naming the row or file
and the problem; nothing is written until a whole dataset has been read and checked.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from app.core.errors import InvalidInputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
CHANNEL_NAMES = {1: "grayscale", 3: "RGB"}
# Small files, mostly waiting on the disk (or the network for URLs) and on zlib, which
# releases the GIL: a few threads per core keep both busy.
READ_THREADS = max(2, min(8, 2 * (os.cpu_count() or 1)))


@dataclass
class RawDataset:
    """A dataset as read, before packing: uint8 images [N, C, H, W], int64 labels indexing
    ``class_names``. ``train_sample_ids`` / ``test_sample_ids`` are the dataset's own IDs
    (None: the dataset has none, a sample's ID is its position, as for IDX files);
    ``train_subject_ids`` / ``test_subject_ids`` name each sample's data subject (None:
    the dataset names no subjects; an entry is None for a sample without one)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list[str]
    train_sample_ids: list[str] | None = None
    test_sample_ids: list[str] | None = None
    train_subject_ids: list[str | None] | None = None
    test_subject_ids: list[str | None] | None = None
    # Conversions applied while decoding (e.g. "RGBA -> RGB (alpha dropped): 3 images"),
    # reported back to whoever registers the dataset.
    notes: list[str] | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        # Images are [N, C, H, W]; mypy types a tuple built from a generator as tuple[int, ...].
        return tuple(int(size) for size in self.train_images.shape[1:])  # type: ignore[return-value]

    @property
    def has_sample_ids(self) -> bool:
        return self.train_sample_ids is not None

    @property
    def has_subjects(self) -> bool:
        return self.train_subject_ids is not None


def check_classes(classes: Sequence[str] | None) -> list[str] | None:
    """An explicit class list: non-empty, unique, non-blank names."""
    if classes is None:
        return None
    names = [str(name).strip() for name in classes]
    if not names:
        raise InvalidInputError("the class list is empty", "classes")
    for index, name in enumerate(names):
        if not name:
            raise InvalidInputError(f"classes[{index}] is blank", "classes")
        if "\x00" in name or len(name) > 200:
            raise InvalidInputError(f"classes[{index}] is longer than 200 characters or "
                                    f"contains a NUL character", "classes")
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInputError(f"classes[{index}] is not valid Unicode text",
                                    "classes") from None
        if names.index(name) != index:
            raise InvalidInputError(f"class {name!r} is listed twice", "classes")
    return names


def check_not_empty(split: str, count: int, where: str) -> None:
    if count == 0:
        raise InvalidInputError(f"the {split} split is empty: {where} has no {split} images",
                                "path")


# --- Images ---------------------------------------------------------------------------

# Pixel modes and what they become. Grayscale stays one channel and colour becomes RGB;
# an alpha channel is dropped (its colour values kept, not composited onto a background);
# palette images become grayscale when every palette colour is a gray, else RGB.
_MODE_CONVERSIONS = {
    "L": "L", "1": "L", "LA": "L", "RGB": "RGB", "RGBA": "RGB", "RGBX": "RGB",
    "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB",
}
_CONVERSION_NOTES = {
    "1": "1-bit -> grayscale", "LA": "grayscale+alpha -> grayscale (alpha dropped)",
    "RGBA": "RGBA -> RGB (alpha dropped)", "RGBX": "RGBX -> RGB", "CMYK": "CMYK -> RGB",
    "YCbCr": "YCbCr -> RGB", "LAB": "LAB -> RGB", "HSV": "HSV -> RGB",
    "P-gray": "palette -> grayscale (every palette colour is a gray)",
    "P-rgb": "palette -> RGB",
}


class ImageProblem(Exception):
    """Why one image cannot be used (the reader adds which row or file it was)."""


def decode_image(data: bytes) -> tuple[np.ndarray, str | None]:
    """Encoded image bytes -> (uint8 [C, H, W] with C = 1 or 3, conversion note or None)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            mode = image.mode
            if mode in ("P", "PA"):
                rgb = np.asarray(image.convert("RGB"))
                if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
                    return np.ascontiguousarray(rgb[None, ..., 0]), "P-gray"
                return np.ascontiguousarray(rgb.transpose(2, 0, 1)), "P-rgb"
            target = _MODE_CONVERSIONS.get(mode)
            if target is None:
                raise ImageProblem(
                    f"unsupported pixel mode {mode} (16-bit or float images): save it as "
                    f"8-bit grayscale or RGB")
            pixels = np.asarray(image if mode == target else image.convert(target))
    except ImageProblem:
        raise
    except Image.DecompressionBombError as error:
        raise ImageProblem(f"image too large ({error})") from None
    except UnidentifiedImageError:
        raise ImageProblem("unreadable image (not an image format PIL can identify)") from None
    except Exception as error:  # noqa: BLE001 - a malformed file may fail anywhere in PIL
        raise ImageProblem(f"unreadable image ({type(error).__name__}: {error})") from None
    if pixels.ndim == 2:
        pixels = pixels[None]
    else:
        pixels = pixels.transpose(2, 0, 1)
    return np.ascontiguousarray(pixels, dtype=np.uint8), (None if mode == target else mode)


def describe_shape(shape: tuple[int, ...]) -> str:
    channels, height, width = shape
    return f"{width}x{height} {CHANNEL_NAMES.get(channels, f'{channels}-channel')}"


class ImageStack:
    """Decodes many images (in a few threads), checks they share one shape, and stacks
    them; counts the pixel-mode conversions it made across every ``read``."""

    def __init__(self) -> None:
        self.notes: dict[str, int] = {}

    def read(self, loaders: Sequence[Callable[[], bytes]], expected: tuple[int, ...] | None,
             describe: Callable[[int], str]) -> np.ndarray:
        """``loaders[i]()`` returns image i's bytes or raises ``ImageProblem``;
        ``describe(i)`` says which row or file image i is, for error messages. The first
        problem in order is reported, so an error is the same on every run."""

        def one(index: int) -> tuple[np.ndarray | None, str | None, str | None]:
            try:
                pixels, note = decode_image(loaders[index]())
            except ImageProblem as problem:
                return None, None, str(problem)
            return pixels, note, None

        count = len(loaders)
        out: np.ndarray | None = None
        shape = expected
        with ThreadPoolExecutor(READ_THREADS) as pool:
            # Chunks bound what waits in memory and let a bad row stop the read early.
            chunk = 2048
            for start in range(0, count, chunk):
                results = list(pool.map(one, range(start, min(count, start + chunk))))
                for offset, (pixels, note, problem) in enumerate(results):
                    index = start + offset
                    if problem is not None:
                        raise InvalidInputError(f"{describe(index)}: {problem}", "path")
                    assert pixels is not None
                    if shape is None:
                        shape = pixels.shape
                    elif pixels.shape != shape:
                        raise InvalidInputError(
                            f"{describe(index)}: image is {describe_shape(pixels.shape)} "
                            f"but the dataset's images are {describe_shape(shape)} (all images "
                            f"must have one size and channel count)", "path")
                    if out is None:
                        out = np.empty((count, *shape), dtype=np.uint8)
                    out[index] = pixels
                    if note is not None:
                        self.notes[note] = self.notes.get(note, 0) + 1
        if out is None:
            return np.empty((0, *(shape or (1, 1, 1))), dtype=np.uint8)
        return out

    def note_lines(self) -> list[str]:
        return [f"{_CONVERSION_NOTES.get(key, key)}: {count} image(s)"
                for key, count in sorted(self.notes.items())]
