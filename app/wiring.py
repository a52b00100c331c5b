"""The wiring: build a ``ServiceContext`` from settings, choosing the concrete parts (the
artifact store, the device, the caches). The top of the layers (docs/reference.md):
only the entry points (app.main, app.cli) and the tests and benchmarks import it."""

from __future__ import annotations

from pathlib import Path

from app.context import ServiceContext, ServiceDatasets
from app.core.config import ConfigError, Settings
from app.datasets.service import MNIST_DATASET
from app.db.session import Database
from app.evaluation.features import FeatureCache
from app.evaluation.service import Evaluator
from app.ml.data import ImageData
from app.ml.device import resolve_device
from app.registry.artifacts import ArtifactStore, LocalArtifactStore
from app.registry.model_cache import ModelCache


def build_context(settings: Settings, data: ImageData | None = None) -> ServiceContext:
    """Wire the parts. ``data`` preloads the MNIST dataset (tests pass a small subset)."""
    from app.unlearning.catalog import configure_caches  # methods import the ML stack

    device = resolve_device(settings.device)
    store = make_artifact_store(settings)
    configure_caches(settings.cache_dir)
    db = Database(settings.database_url)
    datasets = ServiceDatasets(db, settings, subset=_parse_subset(settings.data_subset))
    if data is not None:
        datasets.preload(MNIST_DATASET, data)
    return ServiceContext(
        settings=settings,
        db=db,
        device=device,
        store=store,
        models=ModelCache(store, device, settings.model_cache_size),
        datasets=datasets,
        evaluator=Evaluator(FeatureCache(settings.cache_dir / "features"), device),
    )


def _parse_subset(value: str | None) -> tuple[int, int, int] | None:
    """UNLEARN_DATA_SUBSET='TRAIN,TEST[,SEED]' (validated by Settings)."""
    if not value:
        return None
    numbers = [int(part) for part in value.split(",")]
    return (numbers[0], numbers[1], numbers[2] if len(numbers) > 2 else 0)


def make_artifact_store(settings) -> ArtifactStore:
    """The local directory by default; an object store when UNLEARN_ARTIFACT_URL is set."""
    url = settings.artifact_url
    if not url:
        return LocalArtifactStore(settings.artifact_dir)
    if url.startswith("s3://"):
        from app.registry.s3_store import S3ArtifactStore

        return S3ArtifactStore(url, endpoint_url=settings.s3_endpoint_url)
    if url.startswith("file://"):
        return LocalArtifactStore(Path(url[len("file://"):]))
    raise ConfigError(f"UNLEARN_ARTIFACT_URL={url!r}: use s3://bucket/prefix or file:///path")
