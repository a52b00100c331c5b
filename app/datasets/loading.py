"""Loading a registered dataset's packed copy as ``ImageData``, verified, and a bounded
thread-safe cache of loaded datasets shared by the API, the worker and the CLI.

The packed ``.npy`` files are memory-mapped and checked before anything is served: their
shapes and dtypes against the row, then the content checksum recomputed over the mapped
bytes against the one recorded at registration (about 0.2 s for MNIST). A copy changed
after registration is refused with ``DatasetIntegrityError`` (503, like a corrupted model
file): a model is never trained, forgotten or measured on data other than what the audit
log says.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Protocol

import numpy as np
import orjson
import torch
from cachetools import LRUCache

from app.core.errors import UnavailableError
from app.datasets.checksum import content_checksum
from app.datasets.storage import INDEX_FILE
from app.ml.data import ImageData

_CONVERT_ROWS = 8192


class DatasetIntegrityError(UnavailableError):
    """A packed dataset is missing or differs from what its row records: never served."""

    code = "dataset_integrity"


class DatasetRow(Protocol):
    name: str
    class_names: list[str]
    image_shape: list[int]
    train_size: int
    test_size: int
    checksum: str
    has_sample_ids: bool
    has_subjects: bool
    storage_key: str


def _refuse(row: DatasetRow, problem: str) -> DatasetIntegrityError:
    return DatasetIntegrityError(
        f"dataset {row.name!r}: its packed copy ({row.storage_key}) {problem}; refusing to "
        f"load it (re-register the data under a new name, or restore the copy)")


def _map(row: DatasetRow, folder: Path, array: str, shape: tuple[int, ...],
         dtype: str) -> np.ndarray:
    try:
        mapped = np.load(folder / f"{array}.npy", mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise _refuse(row, f"has no {array}.npy") from None
    except (OSError, ValueError) as error:
        raise _refuse(row, f"has an unreadable {array}.npy ({error})") from None
    if mapped.shape != shape or mapped.dtype != np.dtype(dtype):
        raise _refuse(row, f"holds {array} of shape {mapped.shape} {mapped.dtype}, but "
                           f"{shape} {np.dtype(dtype)} was registered")
    return mapped


def _ids(row: DatasetRow, index: dict, key: str, present: bool) -> tuple[list, list] | None:
    section = index.get(key)
    if not present:
        if section is not None:
            raise _refuse(row, f"has {key} the registration did not record")
        return None
    if not isinstance(section, dict):
        raise _refuse(row, f"lacks its {key}")
    train, test = section.get("train"), section.get("test")
    if not isinstance(train, list) or not isinstance(test, list) or \
            len(train) != row.train_size or len(test) != row.test_size:
        raise _refuse(row, f"has {key} that do not match the split sizes")
    return train, test


def _to_float(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, C, H, W] (memory-mapped) -> float32 in [0, 1], converted in slices so the
    uint8 data is never copied whole."""
    out = torch.empty(images.shape, dtype=torch.float32)
    for start in range(0, len(images), _CONVERT_ROWS):
        block = torch.from_numpy(np.array(images[start:start + _CONVERT_ROWS]))
        out[start:start + len(block)] = block.to(torch.float32).div_(255.0)
    return out


def load_dataset(row: DatasetRow, dataset_dir: Path) -> ImageData:
    """The registered dataset as ``ImageData``: ``train_ids`` 0..N-1 (positions in the
    registered train split), ``sample_keys`` / ``subject_keys`` where it has them."""
    folder = Path(dataset_dir) / row.storage_key
    if not folder.is_dir():
        raise _refuse(row, f"is missing from {Path(dataset_dir)}")
    shape = tuple(int(size) for size in row.image_shape)
    train_images = _map(row, folder, "train_images", (row.train_size, *shape), "uint8")
    train_labels = _map(row, folder, "train_labels", (row.train_size,), "<i8")
    test_images = _map(row, folder, "test_images", (row.test_size, *shape), "uint8")
    test_labels = _map(row, folder, "test_labels", (row.test_size,), "<i8")
    try:
        index = orjson.loads((folder / INDEX_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError) as error:
        raise _refuse(row, f"has an unreadable {INDEX_FILE} ({error})") from None
    if not isinstance(index, dict):
        raise _refuse(row, f"has a malformed {INDEX_FILE}")
    sample_ids = _ids(row, index, "sample_ids", row.has_sample_ids)
    subject_ids = _ids(row, index, "subject_ids", row.has_subjects)
    checksum = content_checksum(train_images, train_labels, test_images, test_labels,
                                sample_ids=sample_ids, subject_ids=subject_ids)
    if checksum != row.checksum:
        raise _refuse(row, f"does not match the recorded checksum (it hashes to {checksum}, "
                           f"{row.checksum} was registered): it changed after registration")
    for labels in (train_labels, test_labels):
        if len(labels) and (labels.min() < 0 or labels.max() >= len(row.class_names)):
            raise _refuse(row, "has labels outside its classes")
    return ImageData(
        train_images=_to_float(train_images),
        train_labels=torch.from_numpy(np.array(train_labels, dtype=np.int64)),
        train_ids=torch.arange(row.train_size),
        test_images=_to_float(test_images),
        test_labels=torch.from_numpy(np.array(test_labels, dtype=np.int64)),
        checksum=row.checksum,
        class_names=tuple(row.class_names),
        sample_keys=tuple(sample_ids[0]) if sample_ids is not None else None,
        subject_keys=tuple(subject_ids[0]) if subject_ids is not None else None,
    )


class DatasetProvider:
    """Loaded datasets by name, at most ``max_loaded`` of them (least recently used goes
    first). Thread-safe; two threads asking for one dataset load it once. A name's entry
    is keyed by its checksum too, so a dataset is never served for another's row."""

    def __init__(self, db, dataset_dir: Path, max_loaded: int = 4):
        self._db = db
        self._dataset_dir = Path(dataset_dir)
        # name -> (checksum, data)
        self._loaded: LRUCache[str, tuple[str, ImageData]] = LRUCache(maxsize=max_loaded)
        self._lock = threading.Lock()  # LRUCache is not thread-safe
        self._loading: dict[str, threading.Lock] = {}

    @classmethod
    def from_settings(cls, db, settings) -> "DatasetProvider":
        """The provider for ``UNLEARN_DATASET_DIR`` and ``UNLEARN_DATASET_CACHE_SIZE``."""
        return cls(db, settings.dataset_dir, settings.dataset_cache_size)

    def get(self, name: str) -> ImageData:
        """The dataset ``name`` (``NotFoundError`` when none is registered under it)."""
        from app.datasets.service import get_dataset

        with self._lock:
            # A name's dataset never changes (rows are immutable): no need to ask the
            # database again once it is loaded.
            entry = self._loaded.get(name)  # a hit counts as a use
            if entry is not None:
                return entry[1]
        with self._db.session() as session:
            row = get_dataset(session, name)
        return self.get_for(row)

    def get_for(self, row: DatasetRow) -> ImageData:
        """The dataset of ``row`` (a row read by the caller)."""
        with self._lock:
            cached = self._cached(row)
            if cached is not None:
                return cached
            name_lock = self._loading.setdefault(row.name, threading.Lock())
        with name_lock:
            with self._lock:
                cached = self._cached(row)
                if cached is not None:
                    return cached
            data = load_dataset(row, self._dataset_dir)
            self.preload(row.name, data)
            return data

    def preload(self, name: str, data: ImageData) -> None:
        """Serve ``data`` for ``name`` (tests and quick runs preload small subsets; the
        subset's checksum keeps the registered one as its prefix)."""
        with self._lock:
            self._loaded[name] = (data.checksum, data)

    def evict(self, name: str) -> None:
        with self._lock:
            self._loaded.pop(name, None)

    def _cached(self, row: DatasetRow) -> ImageData | None:
        entry = self._loaded.get(row.name)
        if entry is None:
            return None
        checksum, data = entry
        if checksum != row.checksum and not checksum.startswith(row.checksum + ":"):
            del self._loaded[row.name]
            return None
        return data
