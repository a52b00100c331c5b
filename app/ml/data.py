"""A labelled image dataset as in-memory tensors (``ImageData``), and MNIST's loader.

Every dataset the service hosts becomes an ``ImageData``: float32 images in [0, 1] of one
shape, integer labels, and for each training image a stable integer ID (its position in the
registered training split; for MNIST, the index in the official 60,000-image split). The
dataset's own string sample IDs and data subjects, where it has them, ride along by ID.
Test images are the held-out set and are never forgettable. Pixels are scaled to [0, 1] as
in the paper; no further normalisation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
TRAIN_SIZE = 60_000


MNIST_CLASSES = tuple(str(digit) for digit in range(10))


class DataUnavailableError(RuntimeError):
    """MNIST is neither in the data directory nor downloadable."""


@dataclass(frozen=True)
class ImageData:
    """Images as float32 [N, C, H, W] in [0, 1]; labels index ``class_names``.

    ``train_ids[i]`` is the stable integer ID of training image i (its position in the
    registered training split), the ID that lineage and forget requests record.
    ``sample_keys`` maps an ID to the dataset's own string sample ID (None: the ID's decimal
    string, as for MNIST); ``subject_keys`` maps an ID to its data subject (None: the
    dataset names no subjects; an entry may be None for a sample without one).
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    train_ids: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    checksum: str
    class_names: tuple[str, ...] = MNIST_CLASSES
    sample_keys: tuple[str, ...] | None = None
    subject_keys: tuple[str | None, ...] | None = None
    # How many training IDs the full dataset has (a subset keeps its parent's count, so
    # that an ID of the dataset is valid whether or not this subset loaded it).
    id_count: int | None = None

    @property
    def num_train(self) -> int:
        return int(self.train_labels.shape[0])

    @property
    def train_id_count(self) -> int:
        if self.id_count is not None:
            return self.id_count
        return int(self.train_ids.max()) + 1 if self.num_train else 0

    def key_of(self, train_id: int) -> str:
        """The dataset's own sample ID of a training ID."""
        return self.sample_keys[train_id] if self.sample_keys is not None else str(train_id)

    def id_of_key(self, key: str) -> int | None:
        """The training ID of one of the dataset's own sample IDs (None: no such sample)."""
        if self.sample_keys is None:
            return int(key) if key.isdigit() and int(key) < self.train_id_count else None
        index = self.__dict__.get("_key_index")
        if index is None:  # built once: a dict over every sample ID
            index = {k: i for i, k in enumerate(self.sample_keys)}
            object.__setattr__(self, "_key_index", index)
        return index.get(key)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of every image."""
        # Images are [N, C, H, W]; mypy types a tuple built from a generator as tuple[int, ...].
        return tuple(int(size) for size in self.train_images.shape[1:])  # type: ignore[return-value]

    def subset(self, train_size: int, test_size: int, seed: int = 0) -> "ImageData":
        """A seeded random subset that keeps the official IDs (for tests and quick runs)."""
        generator = torch.Generator().manual_seed(seed)
        train_pick = torch.randperm(self.num_train, generator=generator)[:train_size].sort().values
        test_pick = torch.randperm(len(self.test_labels), generator=generator)[:test_size].sort().values
        return ImageData(
            train_images=self.train_images[train_pick],
            train_labels=self.train_labels[train_pick],
            train_ids=self.train_ids[train_pick],
            test_images=self.test_images[test_pick],
            test_labels=self.test_labels[test_pick],
            checksum=f"{self.checksum}:subset({train_size},{test_size},{seed})",
            class_names=self.class_names,
            sample_keys=self.sample_keys,  # indexed by ID, which a subset keeps
            subject_keys=self.subject_keys,
            id_count=self.train_id_count,
        )

    def train_positions(self, sample_ids: np.ndarray) -> np.ndarray:
        """Positions in this (possibly subset) training tensor of the given official IDs."""
        ids = self.train_ids.numpy()
        return np.flatnonzero(np.isin(ids, sample_ids))


def _to_float(images: torch.Tensor) -> torch.Tensor:
    return images.to(torch.float32).div_(255.0).unsqueeze(1).contiguous()


def dataset_checksum(train_images: torch.Tensor, train_labels: torch.Tensor,
                     test_images: torch.Tensor, test_labels: torch.Tensor) -> str:
    digest = hashlib.sha256()
    for tensor in (train_images, train_labels, test_images, test_labels):
        digest.update(tensor.contiguous().numpy().tobytes())
    return "sha256:" + digest.hexdigest()


def _read_idx(path: Path) -> torch.Tensor:
    """An IDX file (MNIST's raw format: big-endian dims, then uint8 values) as a tensor."""
    raw = path.read_bytes()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    values = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    return torch.from_numpy(values.reshape(shape).copy())


def _load_raw(raw_dir: Path) -> ImageData | None:
    """Read the four raw files directly when present: the same tensors as torchvision's
    MNIST, without importing torchvision (seconds per process start for workers)."""
    if not all((raw_dir / name).is_file() for name in RAW_FILES):
        return None
    train_data, train_targets, test_data, test_targets = (
        _read_idx(raw_dir / name) for name in RAW_FILES
    )
    train_targets, test_targets = train_targets.long(), test_targets.long()
    return ImageData(
        train_images=_to_float(train_data),
        train_labels=train_targets,
        train_ids=torch.arange(len(train_targets)),
        test_images=_to_float(test_data),
        test_labels=test_targets,
        checksum=dataset_checksum(train_data, train_targets, test_data, test_targets),
    )


def mnist_missing_message(data_dir: Path, reason: str) -> str:
    """One line: where MNIST was looked for, which files, the setting that moves it."""
    raw_dir = Path(data_dir).resolve() / "MNIST" / "raw"
    return (f"MNIST not found: UNLEARN_DATA_DIR (now {Path(data_dir).resolve()}) must hold "
            f"MNIST/raw/ with {', '.join(RAW_FILES)} (plain or .gz), and {reason}. "
            f"Point UNLEARN_DATA_DIR at such a directory (looked in {raw_dir}).")


def download_mnist(data_dir: Path, probe_timeout_s: float = 3.0) -> None:
    """Download MNIST into ``data_dir`` with torchvision, after a quick check that its
    mirror answers at all: without a network this fails in seconds, with one line
    (``DataUnavailableError``), instead of half a minute of retries and a traceback."""
    import socket
    from urllib.parse import urlsplit

    from torchvision.datasets import MNIST

    hosts = [urlsplit(mirror) for mirror in MNIST.mirrors]
    for url in hosts:
        try:
            socket.create_connection(
                (url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                timeout=probe_timeout_s).close()
            break
        except OSError:
            continue
    else:
        raise DataUnavailableError(mnist_missing_message(
            data_dir, f"it cannot be downloaded (no network: {hosts[0].hostname} unreachable)"))
    try:
        MNIST(root=str(data_dir), train=True, download=True)
        MNIST(root=str(data_dir), train=False, download=True)
    except Exception as error:  # torchvision raises RuntimeError or URLError variants
        first_line = str(error).splitlines()[0] if str(error) else repr(error)
        raise DataUnavailableError(mnist_missing_message(
            data_dir, f"the download failed ({first_line})")) from None


def load_mnist(data_dir: Path, download: bool = True) -> ImageData:
    """Load MNIST from ``data_dir`` (torchvision layout ``MNIST/raw``), downloading if allowed."""
    data_dir = Path(data_dir)
    direct = _load_raw(data_dir / "MNIST" / "raw")
    if direct is not None:
        return direct

    from torchvision.datasets import MNIST

    if download and not (data_dir / "MNIST" / "raw").is_dir():
        download_mnist(data_dir)
    try:
        train = MNIST(root=str(data_dir), train=True, download=download)
        test = MNIST(root=str(data_dir), train=False, download=download)
    except Exception as error:  # torchvision raises RuntimeError or URLError variants
        expected = ", ".join(RAW_FILES)
        raise DataUnavailableError(
            f"MNIST not found under {data_dir.resolve() / 'MNIST' / 'raw'} (expected {expected}) "
            f"and it could not be downloaded: {error}. Set UNLEARN_DATA_DIR to a directory "
            f"holding MNIST/raw."
        ) from None
    checksum = dataset_checksum(train.data, train.targets, test.data, test.targets)
    return ImageData(
        train_images=_to_float(train.data),
        train_labels=train.targets.clone(),
        train_ids=torch.arange(len(train.targets)),
        test_images=_to_float(test.data),
        test_labels=test.targets.clone(),
        checksum=checksum,
    )
