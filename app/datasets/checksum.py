"""A dataset's content checksum: what model cards name and what loading verifies.

``sha256:`` + hex over, in order: the train images as uint8 bytes (C-contiguous
[N, C, H, W]), the train labels as int64 little-endian, the test images, the test labels;
then, only when the dataset has them, its sample IDs and its subject IDs. For a dataset
without them (IDX files) this is exactly ``app.ml.data.dataset_checksum`` of the same
tensors, so MNIST keeps the checksum its shipped model card records.

Each ID list is framed so that no two different lists hash alike: a tag, the count as
8 bytes little-endian, then per ID its UTF-8 length as 8 bytes little-endian and the
bytes (a missing subject is the length 2**64 - 1 with no bytes). The lists are train IDs
then test IDs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

MISSING = (2**64 - 1).to_bytes(8, "little")


def _update_ids(digest, tag: bytes, ids: Sequence[str | None]) -> None:
    digest.update(tag)
    digest.update(len(ids).to_bytes(8, "little"))
    for value in ids:
        if value is None:
            digest.update(MISSING)
            continue
        encoded = value.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)


def content_checksum(train_images: np.ndarray, train_labels: np.ndarray,
                     test_images: np.ndarray, test_labels: np.ndarray,
                     sample_ids: tuple[Sequence[str], Sequence[str]] | None = None,
                     subject_ids: tuple[Sequence[str | None], Sequence[str | None]] | None = None,
                     ) -> str:
    """``sample_ids`` / ``subject_ids``: (train IDs, test IDs), or None when absent."""
    digest = hashlib.sha256()
    for images, labels in ((train_images, train_labels), (test_images, test_labels)):
        if images.dtype != np.uint8:
            raise ValueError("images must be uint8")
        _update_chunked(digest, images)
        digest.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
    if sample_ids is not None:
        _update_ids(digest, b"sample_ids\0train\0", sample_ids[0])
        _update_ids(digest, b"sample_ids\0test\0", sample_ids[1])
    if subject_ids is not None:
        _update_ids(digest, b"subject_ids\0train\0", subject_ids[0])
        _update_ids(digest, b"subject_ids\0test\0", subject_ids[1])
    return "sha256:" + digest.hexdigest()


def _update_chunked(digest, images: np.ndarray, rows: int = 8192) -> None:
    """Hash in slices: a memory-mapped array is never copied whole."""
    for start in range(0, len(images), rows):
        digest.update(np.ascontiguousarray(images[start:start + rows]).data)


def raw_checksum(raw) -> str:
    """The checksum of a ``RawDataset``."""
    return content_checksum(
        raw.train_images, raw.train_labels, raw.test_images, raw.test_labels,
        sample_ids=((raw.train_sample_ids, raw.test_sample_ids)
                    if raw.train_sample_ids is not None else None),
        subject_ids=((raw.train_subject_ids, raw.test_subject_ids)
                     if raw.train_subject_ids is not None else None),
    )
