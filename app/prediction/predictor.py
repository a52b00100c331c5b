"""What every prediction route shares: find the version and its loaded model, then run the
forward pass, through the dynamic batcher when it is on (``UNLEARN_PREDICT_BATCHING``)."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
from cachetools import LRUCache
from torch import nn

from app.audit.aggregation import AuditWindows
from app.audit.service import record_artifact_failure
from app.context import ServiceContext
from app.core.errors import CorruptArtifactError, NotFoundError
from app.prediction.batching import DynamicBatcher
from app.prediction.service import forward_probabilities
from app.registry.models import ModelVersion
from app.registry.service import get_registered_model, get_version

# Registry rows kept per Predictor. A version row never changes once published, so a kept
# row cannot go stale; only the production pointer is read from the database each call.
VERSION_ROWS_KEPT = 256


class Predictor:
    def __init__(self, ctx: ServiceContext):
        self.ctx = ctx
        settings = ctx.settings
        self._versions: LRUCache[tuple[str, int], ModelVersion] = LRUCache(
            maxsize=VERSION_ROWS_KEPT)
        self._lock = threading.Lock()  # LRUCache is not thread-safe
        self.batcher: DynamicBatcher | None = None
        # Refusals are audited once per key, version and window: a client cannot flood
        # the append-only log by asking a corrupted version again and again.
        self.refusals = AuditWindows(settings.refused_prediction_audit_window_s)
        if settings.predict_batching:
            self.batcher = DynamicBatcher(
                lambda model, images: forward_probabilities(model, images, ctx.device),
                max_batch_size=settings.predict_batch_max_size,
                max_wait_s=settings.predict_batch_max_wait_ms / 1000.0,
                history=1024,
            )

    def load(self, model_version: int | None, actor: str, field: str = "model_version",
             model_name: str | None = None,
             check=None) -> tuple[ModelVersion, nn.Module]:
        """The version (default: production) and its model; blocking (database, files).

        Rows are read once per version (with their metrics JSON, which a prediction does
        not need): a call naming a version seen before touches no database."""
        version = self._version_row(model_name or self.ctx.model_name, model_version, field)
        if check is not None:  # e.g. whether the version may still answer this caller
            check(version)
        try:
            return version, self.ctx.models.get(version)
        except CorruptArtifactError as error:
            previous = self.refusals.count((actor, version.model_name, version.version))
            if previous is not None:
                record_artifact_failure(self.ctx.db, error, actor,
                                        window_s=self.refusals.window_s,
                                        previous_window_refusals=previous)
            raise

    def _version_row(self, name: str, number: int | None, field: str) -> ModelVersion:
        if number is not None:
            with self._lock:
                row = self._versions.get((name, number))
            if row is not None:
                return row
        with self.ctx.db.session() as session:
            if number is None:
                number = get_registered_model(session, name).production_version
                if number is None:
                    raise NotFoundError(f"model {name!r} has no production version", field)
                with self._lock:
                    row = self._versions.get((name, number))
                if row is not None:
                    return row
            row = get_version(session, name, number, field)
        with self._lock:
            self._versions[(name, number)] = row
        return row

    async def probabilities(self, version: ModelVersion, model: nn.Module,
                            images: np.ndarray) -> np.ndarray:
        """[N, classes] float32 class probabilities of a checked [N, C, H, W] batch."""
        if self.batcher is None:
            return await asyncio.to_thread(forward_probabilities, model, images, self.ctx.device)
        return await self.batcher.submit(version.artifact_sha256, model, images)
