"""The service's shared parts, built once from settings and handed to the API routes,
the CLI and the worker alike, so all three run the same domain code."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from app.core.config import Settings
from app.db.session import Database
from app.evaluation.features import FeatureCache
from app.evaluation.service import Evaluator
from app.ml.data import DataProvider, ImageData
from app.ml.device import resolve_device
from app.registry.artifacts import ArtifactStore, make_artifact_store
from app.registry.model_cache import ModelCache

logger = logging.getLogger("unlearn")


@dataclass
class ServiceContext:
    settings: Settings
    db: Database
    device: torch.device
    store: ArtifactStore
    models: ModelCache
    data: DataProvider
    evaluator: Evaluator
    extras: dict = field(default_factory=dict)

    @property
    def model_name(self) -> str:
        return self.settings.model_name

    def close(self) -> None:
        self.db.dispose()


def build_context(settings: Settings, data: ImageData | None = None) -> ServiceContext:
    """Wire the parts. ``data`` preloads a dataset (tests pass a small real-MNIST subset)."""
    from app.unlearning.catalog import configure_caches  # methods import the ML stack

    device = resolve_device(settings.device)
    store = make_artifact_store(settings)
    configure_caches(settings.cache_dir)
    return ServiceContext(
        settings=settings,
        db=Database(settings.database_url),
        device=device,
        store=store,
        models=ModelCache(store, device, settings.model_cache_size),
        data=DataProvider(settings.data_dir, download=True, preloaded=data,
                          subset=_parse_subset(settings.data_subset)),
        evaluator=Evaluator(FeatureCache(settings.cache_dir / "features"), device),
    )


def _parse_subset(value: str | None) -> tuple[int, int, int] | None:
    """UNLEARN_DATA_SUBSET='TRAIN,TEST[,SEED]' (validated by Settings)."""
    if not value:
        return None
    numbers = [int(part) for part in value.split(",")]
    return (numbers[0], numbers[1], numbers[2] if len(numbers) > 2 else 0)
