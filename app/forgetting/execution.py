"""Carrying out a forget request: claim it, run the method, measure, publish.

The same functions serve the embedded worker thread and a separate worker process.
Publication is one transaction: the artifact is already durable under a unique name, and
the version row, the request's completion and the audit entry commit together. On any
failure the request is marked failed with the reason, and the artifact is removed.

Durability: the forget-request rows are the queue. A claim gives the worker a lease
(``lease_expires_at``) that a heartbeat thread renews while the request runs. A worker that
vanishes stops renewing; once its lease has expired any worker puts the request back in the
queue (``recover_expired``), or fails it after ``max_attempts`` claims. Every state change
is conditional on the row still being held by the worker that makes it, so a worker that
lost its lease can never publish: a request yields at most one version.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import threading
import time
import traceback

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from app.audit.service import AuditAction, record
from app.core.context import ServiceContext
from app.db.base import utcnow
from app.forgetting.models import ForgetRequest, RequestStatus
from app.registry.artifacts import sha256_bytes
from app.registry.model_kinds import model_backbone_sha256, model_bytes
from app.registry.models import ModelVersion
from app.registry.service import artifact_key, get_version, insert_version
from app.subjects.supersession import after_publish
from app.unlearning.base import ForgetTarget
from app.unlearning.catalog import get_method

logger = logging.getLogger("unlearn.worker")


def _lease_until(ctx: ServiceContext, now: dt.datetime) -> dt.datetime:
    return now + dt.timedelta(seconds=ctx.settings.lease_s)


def _lock_rows(statement, session):
    """On PostgreSQL, lock the selected rows and skip rows another transaction holds, so
    that concurrent workers take different rows instead of queueing on one."""
    if session.bind.dialect.name == "postgresql":
        return statement.with_for_update(skip_locked=True)
    return statement


def claim_next(ctx: ServiceContext, worker_id: str) -> str | None:
    """Atomically move the oldest queued request to running under a fresh lease; None if
    the queue is empty.

    PostgreSQL: ``FOR UPDATE SKIP LOCKED`` hands concurrent claimers different rows. SQLite:
    the transaction begins IMMEDIATE (one writer at a time). On both, the conditional
    UPDATE (status still 'queued') makes the claim exclusive: of two claimers racing for
    one row, only one sees rowcount 1.
    """
    with ctx.db.write_session() as session:
        statement = (
            select(ForgetRequest.id)
            .where(ForgetRequest.status == RequestStatus.queued.value)
            .order_by(ForgetRequest.created_at, ForgetRequest.id)
            .limit(1)
        )
        request_id = session.scalar(_lock_rows(statement, session))
        if request_id is None:
            return None
        now = utcnow()
        claimed = session.execute(
            update(ForgetRequest)
            .where(ForgetRequest.id == request_id,
                   ForgetRequest.status == RequestStatus.queued.value)
            .values(status=RequestStatus.running.value, worker_id=worker_id,
                    started_at=now, attempts=ForgetRequest.attempts + 1,
                    lease_expires_at=_lease_until(ctx, now), heartbeat_at=now,
                    progress=0.0)
        ).rowcount
        if claimed != 1:
            return None
        request = session.get(ForgetRequest, request_id)
        session.refresh(request)
        record(
            session, AuditAction.forget_request_started, f"worker:{worker_id}",
            subject_reference=request.subject_reference, forget_request_id=request.id,
            model_name=request.model_name, model_version=request.source_version,
            details={"attempt": request.attempts, "max_attempts": ctx.settings.max_attempts,
                     "worker": worker_id, "lease_s": ctx.settings.lease_s},
        )
        return request_id


def recover_expired(ctx: ServiceContext, worker_id: str, limit: int = 20) -> int:
    """Requests whose worker vanished (lease expired): back to the queue, or failed once
    they have used ``max_attempts`` claims. Any worker may call this; returns the count."""
    max_attempts = ctx.settings.max_attempts
    with ctx.db.write_session() as session:
        now = utcnow()
        statement = (
            select(ForgetRequest)
            .where(ForgetRequest.status == RequestStatus.running.value,
                   ForgetRequest.lease_expires_at < now)
            .order_by(ForgetRequest.lease_expires_at)
            .limit(limit)
        )
        expired = list(session.scalars(_lock_rows(statement, session)))
        for request in expired:
            lost_worker, attempt = request.worker_id, request.attempts
            reason = (f"the lease of worker {lost_worker} expired at "
                      f"{request.lease_expires_at.isoformat()} during attempt {attempt}")
            details = {"previous_worker": lost_worker, "attempt": attempt,
                       "max_attempts": max_attempts, "reason": reason,
                       "last_heartbeat_at": (request.heartbeat_at.isoformat()
                                             if request.heartbeat_at else None)}
            request.worker_id = None
            request.lease_expires_at = None
            if attempt >= max_attempts:
                request.status = RequestStatus.failed.value
                request.error = (f"abandoned after {attempt} attempt(s) "
                                 f"(max_attempts={max_attempts}): {reason}")
                request.finished_at = now
                action = AuditAction.forget_request_failed
                details["error"] = request.error
            else:
                request.status = RequestStatus.queued.value
                request.progress = 0.0
                action = AuditAction.forget_request_requeued
            record(session, action, f"worker:{worker_id}",
                   subject_reference=request.subject_reference, forget_request_id=request.id,
                   model_name=request.model_name, model_version=request.source_version,
                   details=details)
        if expired:
            logger.warning("recovered %d request(s) whose worker's lease expired", len(expired))
        return len(expired)


def renew_lease(ctx: ServiceContext, request_id: str, worker_id: str) -> bool:
    """Extend the lease; False if the request is no longer held by this worker."""
    with ctx.db.session() as session:
        now = utcnow()
        return session.execute(
            update(ForgetRequest)
            .where(ForgetRequest.id == request_id, ForgetRequest.worker_id == worker_id,
                   ForgetRequest.status == RequestStatus.running.value)
            .values(lease_expires_at=_lease_until(ctx, now), heartbeat_at=now)
        ).rowcount == 1


def release(ctx: ServiceContext, request_id: str, worker_id: str, reason: str) -> bool:
    """Hand a held request back to the queue (graceful shutdown). The interrupted claim
    does not count as an attempt."""
    with ctx.db.write_session() as session:
        released = session.execute(
            update(ForgetRequest)
            .where(ForgetRequest.id == request_id, ForgetRequest.worker_id == worker_id,
                   ForgetRequest.status == RequestStatus.running.value)
            .values(status=RequestStatus.queued.value, worker_id=None, lease_expires_at=None,
                    progress=0.0, attempts=ForgetRequest.attempts - 1)
        ).rowcount == 1
        if released:
            request = session.get(ForgetRequest, request_id)
            record(
                session, AuditAction.forget_request_released, f"worker:{worker_id}",
                subject_reference=request.subject_reference, forget_request_id=request.id,
                model_name=request.model_name, model_version=request.source_version,
                details={"reason": reason, "worker": worker_id},
            )
        return released


class LeaseLost(RuntimeError):
    """The request is no longer held by this worker (its lease expired and it was requeued
    or taken by another worker): stop, publish nothing, leave the row alone."""


class ExecutionReleased(RuntimeError):
    """The worker is shutting down and hands the request back instead of finishing it."""


class LeaseKeeper:
    """Renews a request's lease every ``heartbeat_interval_s`` on a background thread, for
    as long as the request runs in this process."""

    def __init__(self, ctx: ServiceContext, request_id: str, worker_id: str):
        self.ctx = ctx
        self.request_id = request_id
        self.worker_id = worker_id
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="unlearn-heartbeat",
                                        daemon=True)

    def _run(self) -> None:
        interval = self.ctx.settings.heartbeat_interval_s
        while not self._stop.wait(interval):
            try:
                if not renew_lease(self.ctx, self.request_id, self.worker_id):
                    self.lost.set()
                    return
            except Exception:  # database briefly unreachable: the lease may still hold
                logger.exception("heartbeat for request %s failed", self.request_id)

    def __enter__(self) -> "LeaseKeeper":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()


def warm_up(ctx: ServiceContext) -> None:
    """Load the dataset and the production version's outcomes before the first request,
    so that it does not pay for reading 70,000 images and their cached features."""
    from app.registry.service import resolve_version

    try:
        with ctx.db.session() as session:
            version = resolve_version(session, ctx.model_name, None)
        model = ctx.models.get(version)
        ctx.evaluator.outcomes(model, version.backbone_sha256, ctx.model_data(ctx.model_name),
                               version.artifact_sha256)
    except Exception:  # nothing registered yet, or data missing: requests will say why
        logger.warning("warm-up skipped", exc_info=True)


def _metrics_summary(metrics: dict) -> dict:
    """Metrics without confusion matrices, small enough for an audit entry."""
    summary = {}
    for name, value in metrics.items():
        if isinstance(value, dict):
            summary[name] = {k: v for k, v in value.items() if k != "confusion_matrix"}
        else:
            summary[name] = value
    return summary


class _ProgressReporter:
    """Writes progress to the request row, at most once a second. Each call is also a
    checkpoint where a long method stops if the lease was lost or the worker is shutting
    down."""

    def __init__(self, ctx: ServiceContext, request_id: str, worker_id: str,
                 lease: LeaseKeeper | None = None, cancel: threading.Event | None = None):
        self.ctx = ctx
        self.request_id = request_id
        self.worker_id = worker_id
        self.lease = lease
        self.cancel = cancel
        self.last = time.monotonic()

    def checkpoint(self) -> None:
        if self.lease is not None and self.lease.lost.is_set():
            raise LeaseLost(f"request {self.request_id} is no longer held by {self.worker_id}")
        if self.cancel is not None and self.cancel.is_set():
            raise ExecutionReleased("worker shutting down")

    def __call__(self, fraction: float) -> None:
        self.checkpoint()
        now = time.monotonic()
        # Completion is written by the publishing transaction itself.
        if now - self.last < 1.0 or fraction >= 1.0:
            return
        self.last = now
        with self.ctx.db.session() as session:
            session.execute(
                update(ForgetRequest)
                .where(ForgetRequest.id == self.request_id,
                       ForgetRequest.worker_id == self.worker_id)
                .values(progress=max(0.0, min(1.0, float(fraction))))
            )


def _test_only_delay(ctx: ServiceContext, progress: _ProgressReporter) -> None:
    """UNLEARN_TEST_EXECUTION_DELAY_S (tests only): stretch the run so that a fault test
    can kill the process mid-request. Sleeps in short steps that report progress."""
    total = ctx.settings.test_execution_delay_s
    if total <= 0:
        return
    deadline = time.monotonic() + total
    while (left := deadline - time.monotonic()) > 0:
        progress(0.9 * (1 - left / total))
        time.sleep(min(0.1, left))


def execute_request(ctx: ServiceContext, request_id: str, worker_id: str,
                    cancel: threading.Event | None = None) -> None:
    """Run a claimed request to completion or failure. Never raises for method errors.

    ``cancel`` (graceful shutdown) makes the run stop at its next progress checkpoint and
    release the request to the queue."""
    stored_key: str | None = None
    with LeaseKeeper(ctx, request_id, worker_id) as lease:
        progress = _ProgressReporter(ctx, request_id, worker_id, lease, cancel)
        try:
            with ctx.db.session() as session:
                request = session.get(ForgetRequest, request_id)
                source = get_version(session, request.model_name, request.source_version)
            method = get_method(request.method)
            params = method.Params.model_validate(request.params)
            target = ForgetTarget(tuple(request.target_classes),
                                  tuple(request.target_sample_ids),
                                  prior_classes=tuple(source.forgotten_classes),
                                  prior_sample_ids=tuple(source.forgotten_sample_ids))
            data = ctx.model_data(request.model_name)

            source_model = ctx.models.get(source)
            before = ctx.evaluator.request_metrics(source_model, source.backbone_sha256, data,
                                                   target, source.artifact_sha256)

            working = copy.deepcopy(source_model)
            for parameter in working.parameters():
                parameter.requires_grad_(True)
            _test_only_delay(ctx, progress)
            forgotten = method.forget(working, target, params, data, progress)
            forgotten.eval()
            progress.checkpoint()

            payload, state = model_bytes(forgotten)
            sha = sha256_bytes(payload)
            backbone = model_backbone_sha256(forgotten, state)
            after = ctx.evaluator.request_metrics(forgotten, backbone, data, target, sha)
            version_metrics = ctx.evaluator.version_metrics(forgotten, backbone, data, sha)

            key = artifact_key(request.model_name)
            ctx.store.put(key, payload)
            stored_key = key
            _publish(ctx, request_id, worker_id, source, key, sha, backbone, before, after,
                     version_metrics, getattr(forgotten, "forget_report", None))
        except LeaseLost as error:
            # Another worker has (or will have) the request: touch nothing of its row.
            logger.warning("request %s: %s; abandoning this attempt", request_id, error)
            _discard(ctx, stored_key)
        except ExecutionReleased:
            _discard(ctx, stored_key)
            if release(ctx, request_id, worker_id, "worker shutting down"):
                logger.info("released request %s back to the queue", request_id)
        except Exception as error:  # the method, the data or the store failed: record why
            logger.exception("forget request %s failed", request_id)
            _discard(ctx, stored_key)
            _mark_failed(ctx, request_id, worker_id, error)


def _discard(ctx: ServiceContext, stored_key: str | None) -> None:
    """Remove an artifact that no version row references. Checked first, because an error
    raised after a commit went through (a connection lost while acknowledging it) must
    not take the file of a published version; when in doubt, the file stays (unreferenced,
    never served)."""
    if stored_key is None:
        return
    try:
        with ctx.db.session() as session:
            referenced = session.scalar(
                select(ModelVersion.id).where(ModelVersion.artifact_path == stored_key))
        if referenced is None:
            ctx.store.delete(stored_key)
    except Exception:
        logger.exception("could not remove unpublished artifact %s", stored_key)


PUBLISH_ATTEMPTS = 5


def _publish(ctx, request_id, worker_id, source, key, sha, backbone, before, after,
             version_metrics, forget_report=None) -> None:
    """Commit the version row, the request's completion and the audit entry together.

    Version numbers are max+1 under the registered model's row lock; should two
    publications still collide on (model, version) (the unique constraint says so), the
    transaction is rolled back and retried with the next number."""
    for attempt in range(1, PUBLISH_ATTEMPTS + 1):
        try:
            _publish_once(ctx, request_id, worker_id, source, key, sha, backbone, before,
                          after, version_metrics, forget_report)
            return
        except IntegrityError:
            if attempt == PUBLISH_ATTEMPTS:
                raise
            logger.info("request %s: version number taken, retrying (%d)", request_id, attempt)
            time.sleep(0.01 * attempt)


def _publish_once(ctx, request_id, worker_id, source, key, sha, backbone, before, after,
                  version_metrics, forget_report=None) -> None:
    with ctx.db.write_session() as session:
        finished = utcnow()
        # Conditional on this worker still holding the request: the row lock it takes also
        # orders us against lease recovery and heartbeats.
        held = session.execute(
            update(ForgetRequest)
            .where(ForgetRequest.id == request_id, ForgetRequest.worker_id == worker_id,
                   ForgetRequest.status == RequestStatus.running.value)
            .values(status=RequestStatus.completed.value, progress=1.0,
                    finished_at=finished, lease_expires_at=None, error=None)
        ).rowcount
        if held != 1:
            raise LeaseLost(f"request {request_id} is no longer held by worker {worker_id}")
        request = session.get(ForgetRequest, request_id)
        version = insert_version(
            session,
            model_name=request.model_name,
            parent_version=source.version,
            architecture=source.architecture,
            kind=source.kind,
            method=request.method,
            params=request.params,
            # Unions: a sample or class forgotten twice is counted once.
            forgotten_classes=sorted({*source.forgotten_classes, *request.target_classes}),
            forgotten_sample_ids=sorted({*source.forgotten_sample_ids,
                                         *request.target_sample_ids}),
            artifact_path=key,
            artifact_sha256=sha,
            backbone_sha256=backbone,
            metrics=version_metrics,
            model_card={**source.model_card, "derived_from": source.version,
                        **({"forget_report": forget_report} if forget_report else {})},
            forget_request_id=request.id,
            created_by=f"worker:{worker_id}",
        )
        request.result_version = version.version
        request.metrics = {"before": before, "after": after}
        # Production that still holds the erased data is promoted away or reported.
        after_publish(session, request, version, f"worker:{worker_id}")
        record(
            session, AuditAction.forget_request_completed, f"worker:{worker_id}",
            subject_reference=request.subject_reference, forget_request_id=request.id,
            model_name=request.model_name, model_version=version.version,
            details={
                "source_version": source.version, "result_version": version.version,
                "method": request.method, "params": request.params,
                "artifact_sha256": sha, "attempt": request.attempts, "worker": worker_id,
                "before": _metrics_summary(before), "after": _metrics_summary(after),
            },
        )


def _mark_failed(ctx: ServiceContext, request_id: str, worker_id: str, error: Exception) -> None:
    reason = f"{type(error).__name__}: {error}"
    with ctx.db.write_session() as session:
        failed = session.execute(
            update(ForgetRequest)
            .where(ForgetRequest.id == request_id, ForgetRequest.worker_id == worker_id,
                   ForgetRequest.status == RequestStatus.running.value)
            .values(status=RequestStatus.failed.value, error=reason, finished_at=utcnow(),
                    lease_expires_at=None)
        ).rowcount
        if failed != 1:  # no longer ours: whoever holds it now decides
            return
        request = session.get(ForgetRequest, request_id)
        record(
            session, AuditAction.forget_request_failed, f"worker:{worker_id}",
            subject_reference=request.subject_reference, forget_request_id=request.id,
            model_name=request.model_name, model_version=request.source_version,
            details={"error": reason,
                     "traceback_tail": traceback.format_exc(limit=3)[-2000:]},
        )
