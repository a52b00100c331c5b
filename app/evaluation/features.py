"""Penultimate features of every image, cached per backbone.

Output dampening changes only the output layer, so all versions it produces share their
parent's backbone: the 70,000 x 128 features are computed once (seconds), then every
metric pass is a 128 x 10 matrix product (milliseconds). The cache key is the backbone's
sha256 plus the dataset checksum; entries live in memory (bounded LRU) and on disk.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from cachetools import LRUCache
from safetensors.torch import load_file, save_file
from app.architectures.base import ImageClassifier
from app.ml.data import ImageData
from app.ml.device import to_device


@dataclass(frozen=True)
class Features:
    train: torch.Tensor  # [N_train, D], aligned with ImageData.train_* (D: the network's)
    test: torch.Tensor  # [N_test, D]


@torch.inference_mode()
def compute_features(model: ImageClassifier, images: torch.Tensor, device: torch.device,
                     batch_size: int = 4096) -> torch.Tensor:
    model = model.to(device).eval()
    chunks = [
        model.features(to_device(images[start : start + batch_size], device)).cpu()
        for start in range(0, images.shape[0], batch_size)
    ]
    if not chunks:
        width = model.output_layer.in_features
        return torch.empty(0, width)
    return torch.cat(chunks)


class FeatureCache:
    def __init__(self, directory: Path | None, capacity: int = 4):
        self.directory = Path(directory) if directory else None
        self.capacity = capacity
        self._entries: LRUCache[str, Features] = LRUCache(maxsize=capacity)
        self._lock = threading.Lock()  # LRUCache is not thread-safe
        self._key_locks: dict[str, threading.Lock] = {}

    @staticmethod
    def key(backbone_sha256: str, data: ImageData) -> str:
        data_hash = hashlib.sha256(data.checksum.encode()).hexdigest()[:16]
        return f"{backbone_sha256[:32]}-{data_hash}"

    def get(self, backbone_sha256: str, model: ImageClassifier, data: ImageData,
            device: torch.device) -> Features:
        key = self.key(backbone_sha256, data)
        with self._lock:
            cached = self._entries.get(key)  # a hit counts as a use
            if cached is not None:
                return cached
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # one computation per key even when requests race
            with self._lock:
                cached = self._entries.get(key)
            if cached is not None:
                return cached
            features = self._load(key) or self._compute(key, model, data, device)
            with self._lock:
                self._entries[key] = features
            return features

    def _path(self, key: str) -> Path | None:
        return self.directory / f"features-{key}.safetensors" if self.directory else None

    def _load(self, key: str) -> Features | None:
        path = self._path(key)
        if path is None or not path.exists():
            return None
        try:
            tensors = load_file(str(path))
            return Features(train=tensors["train"], test=tensors["test"])
        except Exception:  # a damaged cache file is recomputed, never trusted
            path.unlink(missing_ok=True)
            return None

    def _compute(self, key: str, model: ImageClassifier, data: ImageData,
                 device: torch.device) -> Features:
        features = Features(
            train=compute_features(model, data.train_images, device),
            test=compute_features(model, data.test_images, device),
        )
        path = self._path(key)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".tmp-{threading.get_ident()}-{path.name}")
            save_file({"train": features.train, "test": features.test}, str(temporary))
            temporary.replace(path)
        return features
