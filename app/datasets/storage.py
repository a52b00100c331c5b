"""The packed, immutable copy of a registered dataset under ``UNLEARN_DATASET_DIR``.

``<dataset_dir>/<name>-<12 hex digits of the checksum>-<8 random hex digits>/`` holds
``train_images.npy`` and ``test_images.npy`` (uint8 [N, C, H, W]), ``train_labels.npy``
and ``test_labels.npy`` (int64), and ``index.json`` (class names, shape, sizes, checksum,
and the sample and subject IDs where the dataset has them). It is written into a
``.tmp-*`` folder, each file fsynced, then renamed into place: a reader never sees half a
copy. The random part keeps two concurrent registrations of one name from ever sharing a
folder (the database's primary key decides which one wins; the loser removes its own).
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

import numpy as np
import orjson

from app.datasets.formats.common import RawDataset

ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")
INDEX_FILE = "index.json"
PACK_FORMAT = 1


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def pack(raw: RawDataset, dataset_dir: Path, name: str, checksum: str) -> str:
    """Write the packed copy; returns its storage key (the folder name)."""
    dataset_dir = Path(dataset_dir)
    dataset_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(4)
    key = f"{name}-{checksum.removeprefix('sha256:')[:12]}-{token}"
    temporary = dataset_dir / f".tmp-{key}"
    try:
        temporary.mkdir()
        arrays = {
            "train_images": np.ascontiguousarray(raw.train_images, dtype=np.uint8),
            "train_labels": np.ascontiguousarray(raw.train_labels, dtype="<i8"),
            "test_images": np.ascontiguousarray(raw.test_images, dtype=np.uint8),
            "test_labels": np.ascontiguousarray(raw.test_labels, dtype="<i8"),
        }
        for array_name, array in arrays.items():
            target = temporary / f"{array_name}.npy"
            with open(target, "wb") as handle:
                np.save(handle, array, allow_pickle=False)
                handle.flush()
                os.fsync(handle.fileno())
        index = {
            "pack_format": PACK_FORMAT,
            "name": name,
            "checksum": checksum,
            "class_names": list(raw.class_names),
            "image_shape": list(raw.image_shape),
            "train_size": int(len(raw.train_labels)),
            "test_size": int(len(raw.test_labels)),
            "sample_ids": ({"train": raw.train_sample_ids, "test": raw.test_sample_ids}
                           if raw.train_sample_ids is not None else None),
            "subject_ids": ({"train": raw.train_subject_ids, "test": raw.test_subject_ids}
                            if raw.train_subject_ids is not None else None),
        }
        with open(temporary / INDEX_FILE, "wb") as handle:
            handle.write(orjson.dumps(index))
            handle.flush()
            os.fsync(handle.fileno())
        final = dataset_dir / key
        os.rename(temporary, final)
        _fsync(dataset_dir)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return key


def remove(dataset_dir: Path, storage_key: str) -> None:
    """Delete a packed copy (a registration that did not commit)."""
    if storage_key and "/" not in storage_key and storage_key not in (".", ".."):
        shutil.rmtree(Path(dataset_dir) / storage_key, ignore_errors=True)
