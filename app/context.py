"""The service's shared parts (``ServiceContext``), handed to the API routes, the CLI and
the worker alike, so all three run the same domain code. ``app.wiring`` builds one from
settings."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import torch

from app.core.config import Settings
from app.core.errors import NotFoundError
from app.datasets.service import MNIST_DATASET
from app.db.session import Database
from app.evaluation.service import Evaluator
from app.ml.data import ImageData
from app.registry.artifacts import ArtifactStore
from app.registry.model_cache import ModelCache

logger = logging.getLogger("unlearn")


class ServiceDatasets:
    """Registered datasets by name (see ``app.datasets``), with MNIST as the
    zero-configuration default: asked for before anyone registered it, it is registered
    from UNLEARN_DATA_DIR, as ``unlearn bootstrap`` does. UNLEARN_DATA_SUBSET serves a
    seeded subset of every dataset (quick runs and tests)."""

    def __init__(self, db: Database, settings: Settings,
                 subset: tuple[int, int, int] | None = None):
        from app.datasets.loading import DatasetProvider

        self._db = db
        self._settings = settings
        self._subset = subset
        self._provider = DatasetProvider.from_settings(db, settings)
        self._preloaded: set[str] = set()
        self._lock = threading.Lock()

    def preload(self, name: str, data: ImageData) -> None:
        """Serve ``data`` as dataset ``name`` (tests preload small subsets)."""
        with self._lock:
            self._preloaded.add(name)
            self._provider.preload(name, data)

    def get(self, name: str) -> ImageData:
        try:
            data = self._provider.get(name)
        except NotFoundError:
            if name != MNIST_DATASET:
                raise
            from app.datasets.service import ensure_mnist_dataset

            ensure_mnist_dataset(self._db, self._settings)
            data = self._provider.get(name)
        if self._subset is None:
            return data
        with self._lock:
            if name in self._preloaded:  # the subset (or a test's data) is what it serves
                return self._provider.get(name)
            data = data.subset(*self._subset)
            self._provider.preload(name, data)
            self._preloaded.add(name)
            return data


@dataclass
class ServiceContext:
    settings: Settings
    db: Database
    device: torch.device
    store: ArtifactStore
    models: ModelCache
    datasets: ServiceDatasets
    evaluator: Evaluator
    extras: dict = field(default_factory=dict)
    # model name -> dataset name; a model's dataset never changes once registered.
    _model_datasets: dict[str, str] = field(default_factory=dict)

    @property
    def model_name(self) -> str:
        """The default model: the one the design card's paths address."""
        return self.settings.model_name

    def dataset_of(self, model_name: str) -> str:
        """The name of the dataset ``model_name`` was trained on (404 if no such model)."""
        cached = self._model_datasets.get(model_name)
        if cached is not None:
            return cached
        from app.registry.service import get_registered_model

        with self.db.session() as session:
            dataset = get_registered_model(session, model_name).dataset_name
        self._model_datasets[model_name] = dataset
        return dataset

    def model_data(self, model_name: str) -> ImageData:
        """The dataset ``model_name`` was trained on, loaded."""
        return self.datasets.get(self.dataset_of(model_name))

    def close(self) -> None:
        self.db.dispose()
