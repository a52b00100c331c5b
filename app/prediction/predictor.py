"""What every prediction route shares: find the version and its loaded model, then run the
forward pass, through the dynamic batcher when it is on (``UNLEARN_PREDICT_BATCHING``)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from cachetools import LRUCache
from sqlalchemy.orm import Session
from torch import nn

from app.audit.aggregation import AuditWindows
from app.audit.service import record_artifact_failure
from app.context import ServiceContext
from app.core.errors import CorruptArtifactError, NotFoundError
from app.prediction.batching import DynamicBatcher
from app.prediction.service import forward_probabilities
from app.registry.models import ModelVersion
from app.registry.service import get_version
from app.subjects.supersession import VersionState, VersionStates, VersionStatus

# Registry rows kept per Predictor. A version row never changes once published, so a kept
# row cannot go stale; the production pointer and the versions' superseded/purged state
# are read from the database each call (one statement, app.subjects.supersession).
VERSION_ROWS_KEPT = 256
CURRENT = VersionState(VersionStatus.current)

_forward_thread: ThreadPoolExecutor | None = None
_forward_thread_lock = threading.Lock()


def forward_thread() -> ThreadPoolExecutor:
    """The one thread of this process that runs the prediction routes' forward passes.

    One thread, not the loop's pool: on a CPU each pass already uses every core through
    PyTorch's intra-op threads, so two at once only fight for them, and each thread that
    calls into PyTorch gets an OpenMP team of its own, so passes spread over a pool kept
    several teams contending for the same cores. Measured on the 2-core CPU, this took the
    binary v2 path from 65% to 82% of the raw pass (docs/serving.md). On a GPU one thread
    issuing the batcher's passes loses nothing."""
    global _forward_thread
    with _forward_thread_lock:
        if _forward_thread is None:
            _forward_thread = ThreadPoolExecutor(1, thread_name_prefix="unlearn-forward")
        return _forward_thread


class Predictor:
    def __init__(self, ctx: ServiceContext):
        self.ctx = ctx
        settings = ctx.settings
        self._versions: LRUCache[tuple[str, int], ModelVersion] = LRUCache(
            maxsize=VERSION_ROWS_KEPT)
        self._lock = threading.Lock()  # LRUCache is not thread-safe
        self.states = VersionStates()
        self.forward_executor = forward_thread()
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
                executor=self.forward_executor,
            )

    def load(self, model_version: int | None, actor: str, field: str = "model_version",
             model_name: str | None = None, check=None,
             unregistered: Exception | None = None,
             session: Session | None = None) -> tuple[ModelVersion, nn.Module]:
        """The version (default: production) and its model; blocking (database, files).

        ``check(row, state)``, when given, judges whether the version may answer (e.g.
        ``check_servable``); ``state`` is its superseded/purged state, read in the same
        database session as the production pointer: one session a call, and none for a
        version seen before when there is nothing to check. ``unregistered``: raised, when
        given, if the model is not registered (read in that same session). ``session``:
        the caller's read-only session, used instead of one of its own."""
        version, state = self._version_row(model_name or self.ctx.model_name, model_version,
                                           field, with_state=check is not None,
                                           unregistered=unregistered, session=session)
        if check is not None:
            check(version, state)
        try:
            return version, self.ctx.models.get(version)
        except CorruptArtifactError as error:
            previous = self.refusals.count((actor, version.model_name, version.version))
            if previous is not None:
                record_artifact_failure(self.ctx.db, error, actor,
                                        window_s=self.refusals.window_s,
                                        previous_window_refusals=previous)
            raise

    def _version_row(self, name: str, number: int | None, field: str,
                     with_state: bool = False, unregistered: Exception | None = None,
                     session: Session | None = None) -> tuple[ModelVersion, VersionState]:
        row = None
        if number is not None:
            with self._lock:
                row = self._versions.get((name, number))
            if row is not None and not with_state:
                return row, CURRENT
        with self.ctx.db.session_or(session) as session:
            states: dict[int, VersionState] = {}
            if number is None or with_state:
                registered, production, states = self.states.read(session, name)
                if not registered and unregistered is not None:
                    raise unregistered
                if number is None:
                    if not registered:
                        raise NotFoundError(f"model {name!r} is not registered", field)
                    if production is None:
                        raise NotFoundError(f"model {name!r} has no production version",
                                            field)
                    number = production
                    with self._lock:
                        row = self._versions.get((name, number))
            if row is None:
                row = get_version(session, name, number, field)
                # Kept detached: the session may be the caller's, and if the caller's work
                # fails in it, its rollback expires every row it holds; a kept row that
                # was expired would fail the next call that takes it from the cache.
                session.expunge(row)
                with self._lock:
                    self._versions[(name, number)] = row
        return row, states.get(row.version, CURRENT)

    async def probabilities(self, version: ModelVersion, model: nn.Module,
                            images: np.ndarray) -> np.ndarray:
        """[N, classes] float32 class probabilities of a checked [N, C, H, W] batch."""
        if self.batcher is None:
            return await asyncio.get_running_loop().run_in_executor(
                self.forward_executor, forward_probabilities, model, images, self.ctx.device)
        return await self.batcher.submit(version.artifact_sha256, model, images)
