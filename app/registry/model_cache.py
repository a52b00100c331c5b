"""Loaded models, kept in memory (bounded LRU) so that switching versions rereads nothing.

Keyed by artifact sha256: the bytes were verified against that hash when loaded, and a
version's artifact never changes, so a cached entry can never be stale.
"""

from __future__ import annotations

import threading

import torch
from cachetools import LRUCache
from torch import nn

from app.core.errors import CorruptArtifactError
from app.registry.artifacts import ArtifactIntegrityError, ArtifactStore
from app.registry.model_kinds import load_model
from app.registry.models import ModelVersion


class ModelCache:
    def __init__(self, store: ArtifactStore, device: torch.device, capacity: int = 8):
        self.store = store
        self.device = device
        self.capacity = capacity
        self._models: LRUCache[str, nn.Module] = LRUCache(maxsize=capacity)
        self._lock = threading.Lock()  # LRUCache is not thread-safe
        # Plain counts (read by the metrics collector at scrape time): an increment under
        # the lock already taken costs nothing measurable on the predict path.
        self.hits = 0
        self.misses = 0

    def get(self, version: ModelVersion) -> nn.Module:
        """The version's model in eval mode on the service's device. Treat it as read-only."""
        key = version.artifact_sha256
        with self._lock:
            model = self._models.get(key)  # a hit counts as a use
            if model is not None:
                self.hits += 1
                return model
            self.misses += 1
        try:
            data = self.store.get(version.artifact_path, version.artifact_sha256)
        except ArtifactIntegrityError as error:
            # The reason names the file and the store (a server path): it goes to the
            # audit entry and the logs, never into the message clients see.
            raise CorruptArtifactError(
                f"model version {version.version} of {version.model_name!r} cannot be "
                f"served: its stored file is missing or its sha256 differs from the "
                f"registry's record (refusing to load a modified model)",
                model_name=version.model_name, version=version.version,
                expected_sha256=version.artifact_sha256, reason=str(error),
            ) from None
        model = load_model(version.kind, version.architecture, data)
        model = model.to(self.device).eval()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        with self._lock:
            self._models[key] = model
        return model

    def clear(self) -> None:
        with self._lock:
            self._models.clear()
