"""What every prediction route shares: find the version and its loaded model, then run the
forward pass, through the dynamic batcher when it is on (``UNLEARN_PREDICT_BATCHING``)."""

from __future__ import annotations

import asyncio

import numpy as np
from starlette.concurrency import run_in_threadpool

from app.audit.service import record_artifact_failure
from app.core.context import ServiceContext
from app.core.errors import CorruptArtifactError
from app.prediction.batching import DynamicBatcher
from app.prediction.service import forward_probabilities
from app.registry.models import ModelVersion
from app.registry.service import resolve_version


class Predictor:
    def __init__(self, ctx: ServiceContext):
        self.ctx = ctx
        settings = ctx.settings
        self.batcher: DynamicBatcher | None = None
        if settings.predict_batching:
            self.batcher = DynamicBatcher(
                lambda model, images: forward_probabilities(model, images, ctx.device),
                max_batch_size=settings.predict_batch_max_size,
                max_wait_s=settings.predict_batch_max_wait_ms / 1000.0,
                history=1024,
            )

    def load(self, model_version: int | None, actor: str,
             field: str = "model_version") -> tuple[ModelVersion, object]:
        """The version (default: production) and its model; blocking (database, files)."""
        with self.ctx.db.session() as session:
            version = resolve_version(session, self.ctx.model_name, model_version, field)
        try:
            return version, self.ctx.models.get(version)
        except CorruptArtifactError as error:
            record_artifact_failure(self.ctx.db, error, actor)
            raise

    async def probabilities(self, version: ModelVersion, model: object,
                            images: np.ndarray) -> np.ndarray:
        """[N, classes] float32 class probabilities of a checked [N, C, H, W] batch."""
        if self.batcher is None:
            return await asyncio.to_thread(forward_probabilities, model, images, self.ctx.device)
        return await self.batcher.submit(version.artifact_sha256, model, images)

    async def load_async(self, model_version: int | None, actor: str,
                         field: str = "model_version") -> tuple[ModelVersion, object]:
        return await run_in_threadpool(self.load, model_version, actor, field)
