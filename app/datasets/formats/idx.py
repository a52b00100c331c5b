"""``idx``: MNIST-format IDX files (MNIST, Fashion-MNIST, KMNIST), plain or gzipped.

A directory holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each possibly ``.gz``, as
Debian's ``dataset-fashion-mnist`` ships them; ``train-images.idx3-ubyte`` spellings are
accepted too), or a directory with such files under ``MNIST/raw`` (torchvision's layout)
or ``raw``. Samples have no string IDs of their own: a training image's ID is its
position. Class names are "0", "1", ... unless a class list is given.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from app.core.errors import InvalidInputError
from app.datasets.formats.common import RawDataset, check_classes, check_not_empty

PARTS = {
    "train images": ("train-images", "idx3-ubyte"),
    "train labels": ("train-labels", "idx1-ubyte"),
    "test images": ("t10k-images", "idx3-ubyte"),
    "test labels": ("t10k-labels", "idx1-ubyte"),
}
SUBFOLDERS = ("", "MNIST/raw", "raw")


def candidate_names(part: str) -> list[str]:
    stem, suffix = PARTS[part]
    names = [f"{stem}-{suffix}", f"{stem}.{suffix}"]
    # Plain files first: torchvision keeps both and the plain ones read faster.
    return names + [name + ".gz" for name in names]


def find_files(root: Path) -> dict[str, Path] | None:
    """The four files in ``root`` or one of its usual subfolders, or None."""
    for sub in SUBFOLDERS:
        folder = root / sub if sub else root
        found = {}
        for part in PARTS:
            match = next((folder / name for name in candidate_names(part)
                          if (folder / name).is_file()), None)
            if match is None:
                break
            found[part] = match
        if len(found) == len(PARTS):
            return found
    return None


def read_idx_file(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes: magic 0x00 0x00 0x08 <ndim>, big-endian sizes, data."""
    try:
        raw = path.read_bytes()
        if path.name.endswith(".gz"):
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise InvalidInputError(f"{path}: cannot read ({error})", "path") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise InvalidInputError(f"{path}: not an IDX file (bad magic number)", "path")
    if raw[2] != 0x08:
        raise InvalidInputError(f"{path}: IDX data type 0x{raw[2]:02x} is not unsigned bytes "
                                f"(0x08)", "path")
    if raw[3] != ndim:
        raise InvalidInputError(f"{path}: has {raw[3]} dimensions, expected {ndim}", "path")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise InvalidInputError(f"{path}: truncated header", "path")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(raw) != expected:
        raise InvalidInputError(f"{path}: {len(raw)} bytes, but its header {shape} needs "
                                f"{expected}", "path")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read(path: str, classes: list[str] | None = None) -> RawDataset:
    root = Path(path)
    if not root.is_dir():
        raise InvalidInputError(f"{path} is not a directory", "path")
    files = find_files(root)
    if files is None:
        wanted = ", ".join(candidate_names(part)[0] for part in PARTS)
        raise InvalidInputError(
            f"no IDX files in {path} (nor in its MNIST/raw or raw folder): expected {wanted} "
            f"(or the same names with .gz)", "path")
    train_images = read_idx_file(files["train images"], 3)
    train_labels = read_idx_file(files["train labels"], 1)
    test_images = read_idx_file(files["test images"], 3)
    test_labels = read_idx_file(files["test labels"], 1)
    for split, images, labels in (("train", train_images, train_labels),
                                  ("test", test_images, test_labels)):
        if len(images) != len(labels):
            raise InvalidInputError(f"{split}: {len(images)} images but {len(labels)} labels",
                                    "path")
        check_not_empty(split, len(images), path)
    if train_images.shape[1:] != test_images.shape[1:]:
        raise InvalidInputError(f"train images are {train_images.shape[1:]} but test images "
                                f"are {test_images.shape[1:]}", "path")
    highest = int(max(train_labels.max(), test_labels.max()))
    names = check_classes(classes)
    if names is None:
        names = [str(index) for index in range(highest + 1)]
    elif highest >= len(names):
        split, labels = (("train", train_labels) if train_labels.max() == highest
                         else ("test", test_labels))
        row = int(np.flatnonzero(labels == highest)[0])
        raise InvalidInputError(f"{split} label {highest} (image {row}) is outside the "
                                f"{len(names)} classes given", "classes")
    return RawDataset(
        train_images=train_images[:, None],
        train_labels=train_labels.astype(np.int64),
        test_images=test_images[:, None],
        test_labels=test_labels.astype(np.int64),
        class_names=names,
    )
