"""Purging superseded versions: delete their artifacts, keep their rows, sha256, metrics
and audit history. A purge row is committed (with its audit entry) before the file is
deleted, so a prediction never loads a half-deleted version: from the commit on it is a
410; a deletion that fails is retried by the next purge."""

from __future__ import annotations

import datetime as dt
import logging
import threading

from sqlalchemy import select

from app.audit.service import record
from app.db.base import utcnow
from app.registry.models import ModelVersion, RegisteredModel
from app.subjects.models import VersionPurge
from app.subjects.supersession import SubjectAuditAction, VersionStatus, version_states

logger = logging.getLogger("unlearn.purge")


def purge_superseded(ctx, older_than_days: float, actor: str,
                     now: dt.datetime | None = None) -> list[tuple[str, int]]:
    """Purge every version superseded at least ``older_than_days`` ago (never a production
    version). Returns the (model, version) pairs purged by this call."""
    cutoff = (now or utcnow()) - dt.timedelta(days=older_than_days)
    purged: list[tuple[str, int]] = []
    with ctx.db.session() as session:
        names = list(session.scalars(select(RegisteredModel.name)))
    for name in names:
        with ctx.db.write_session() as session:
            registered = session.get(RegisteredModel, name, with_for_update=True)
            states = version_states(session, name)
            for version in session.scalars(select(ModelVersion)
                                           .where(ModelVersion.model_name == name)):
                state = states[version.version]
                if (state.status is not VersionStatus.superseded
                        or version.version == registered.production_version
                        or state.superseded_at is None or state.superseded_at > cutoff):
                    continue
                session.add(VersionPurge(model_name=name, version=version.version,
                                         artifact_path=version.artifact_path,
                                         superseded_by=state.superseded_by,
                                         purged_by=actor))
                record(session, SubjectAuditAction.artifact_purged, actor,
                       model_name=name, model_version=version.version,
                       forget_request_id=state.superseded_by,
                       details={"artifact_sha256": version.artifact_sha256,
                                "superseded_at": state.superseded_at.isoformat(),
                                "older_than_days": older_than_days})
                purged.append((name, version.version))
    _delete_purged_files(ctx)
    return purged


def _delete_purged_files(ctx) -> None:
    """Delete the files of purged versions that no unpurged version shares."""
    with ctx.db.session() as session:
        paths = set(session.scalars(select(VersionPurge.artifact_path)))
        live = set(session.scalars(
            select(ModelVersion.artifact_path)
            .outerjoin(VersionPurge, (VersionPurge.model_name == ModelVersion.model_name)
                       & (VersionPurge.version == ModelVersion.version))
            .where(VersionPurge.id.is_(None))))
    for path in sorted(paths - live):
        try:
            if ctx.store.exists(path):
                ctx.store.delete(path)
        except Exception:
            logger.exception("could not delete purged artifact %s; the next purge retries",
                             path)


class PurgeScheduler:
    """Runs ``purge_superseded`` every UNLEARN_PURGE_INTERVAL_S when
    UNLEARN_PURGE_SUPERSEDED_AFTER_DAYS is set."""

    def __init__(self, ctx):
        self.ctx = ctx
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="purge", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        days = self.ctx.settings.purge_superseded_after_days
        while not self._stop.is_set():
            try:
                done = purge_superseded(self.ctx, days, "scheduler:purge")
                if done:
                    logger.info("purged %d superseded version(s)", len(done))
            except Exception:
                logger.exception("scheduled purge failed")
            self._stop.wait(self.ctx.settings.purge_interval_s)
