"""Carrying out a forget request: claim it, run the method, measure, publish.

The same functions serve the embedded worker thread and a separate worker process.
Publication is one transaction: the artifact is already durable under a unique name, and
the version row, the request's completion and the audit entry commit together. On any
failure the request is marked failed with the reason, and the artifact is removed.
"""

from __future__ import annotations

import copy
import logging
import time
import traceback

from sqlalchemy import select, update

from app.audit.service import AuditAction, record
from app.core.context import ServiceContext
from app.db.base import utcnow
from app.forgetting.models import ForgetRequest, RequestStatus
from app.registry.artifacts import backbone_sha256, serialize_state, sha256_bytes
from app.registry.service import artifact_key, get_version, insert_version
from app.unlearning.base import ForgetTarget
from app.unlearning.catalog import get_method

logger = logging.getLogger("unlearn.worker")


def claim_next(ctx: ServiceContext, worker_id: str) -> str | None:
    """Atomically move the oldest queued request to running; None if the queue is empty.

    The conditional UPDATE (status still 'queued') makes the claim exclusive on any
    database: of two claimers racing for one row, only one sees rowcount 1.
    """
    with ctx.db.session() as session:
        statement = (
            select(ForgetRequest.id)
            .where(ForgetRequest.status == RequestStatus.queued.value)
            .order_by(ForgetRequest.created_at, ForgetRequest.id)
            .limit(1)
        )
        if session.bind.dialect.name == "postgresql":
            statement = statement.with_for_update(skip_locked=True)
        request_id = session.scalar(statement)
        if request_id is None:
            return None
        claimed = session.execute(
            update(ForgetRequest)
            .where(ForgetRequest.id == request_id,
                   ForgetRequest.status == RequestStatus.queued.value)
            .values(status=RequestStatus.running.value, worker_id=worker_id,
                    started_at=utcnow(), attempts=ForgetRequest.attempts + 1)
        ).rowcount
        if claimed != 1:
            return None
        request = session.get(ForgetRequest, request_id)
        record(
            session, AuditAction.forget_request_started, f"worker:{worker_id}",
            subject_reference=request.subject_reference, forget_request_id=request.id,
            model_name=request.model_name, model_version=request.source_version,
            details={"attempt": request.attempts},
        )
        return request_id


def requeue_running(ctx: ServiceContext) -> int:
    """Put back requests left 'running' by a process that died. Safe only where this
    process is the sole worker (the embedded single-process default)."""
    with ctx.db.session() as session:
        return session.execute(
            update(ForgetRequest)
            .where(ForgetRequest.status == RequestStatus.running.value)
            .values(status=RequestStatus.queued.value, worker_id=None, progress=0.0)
        ).rowcount


def warm_up(ctx: ServiceContext) -> None:
    """Load the dataset and the production version's outcomes before the first request,
    so that it does not pay for reading 70,000 images and their cached features."""
    from app.registry.service import resolve_version

    try:
        with ctx.db.session() as session:
            version = resolve_version(session, ctx.model_name, None)
        model = ctx.models.get(version)
        ctx.evaluator.outcomes(model, version.backbone_sha256, ctx.data.get(),
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
    """Writes progress to the request row, at most once a second."""

    def __init__(self, ctx: ServiceContext, request_id: str):
        self.ctx = ctx
        self.request_id = request_id
        self.last = time.monotonic()

    def __call__(self, fraction: float) -> None:
        now = time.monotonic()
        # Completion is written by the publishing transaction itself.
        if now - self.last < 1.0 or fraction >= 1.0:
            return
        self.last = now
        with self.ctx.db.session() as session:
            session.execute(
                update(ForgetRequest).where(ForgetRequest.id == self.request_id)
                .values(progress=max(0.0, min(1.0, float(fraction))))
            )


def execute_request(ctx: ServiceContext, request_id: str, worker_id: str) -> None:
    """Run a claimed request to completion or failure. Never raises for method errors."""
    stored_key: str | None = None
    try:
        with ctx.db.session() as session:
            request = session.get(ForgetRequest, request_id)
            source = get_version(session, request.model_name, request.source_version)
        method = get_method(request.method)
        params = method.Params.model_validate(request.params)
        target = ForgetTarget(tuple(request.target_classes), tuple(request.target_sample_ids))
        data = ctx.data.get()

        source_model = ctx.models.get(source)
        before = ctx.evaluator.request_metrics(source_model, source.backbone_sha256, data,
                                               target, source.artifact_sha256)

        working = copy.deepcopy(source_model)
        for parameter in working.parameters():
            parameter.requires_grad_(True)
        forgotten = method.forget(working, target, params, data, _ProgressReporter(ctx, request_id))
        forgotten.eval()

        state = {name: tensor.detach().cpu() for name, tensor in forgotten.state_dict().items()}
        payload = serialize_state(state, {"architecture": source.architecture,
                                          "kind": source.kind})
        sha = sha256_bytes(payload)
        backbone = backbone_sha256(state)
        after = ctx.evaluator.request_metrics(forgotten, backbone, data, target, sha)
        version_metrics = ctx.evaluator.version_metrics(forgotten, backbone, data, sha)

        key = artifact_key(request.model_name)
        ctx.store.put(key, payload)
        stored_key = key
        _publish(ctx, request_id, worker_id, source, key, sha, backbone, before, after,
                 version_metrics)
    except Exception as error:  # the method, the data or the store failed: record why
        logger.exception("forget request %s failed", request_id)
        if stored_key is not None:
            ctx.store.delete(stored_key)
        _mark_failed(ctx, request_id, worker_id, error)


def _publish(ctx, request_id, worker_id, source, key, sha, backbone, before, after,
             version_metrics) -> None:
    with ctx.db.session() as session:
        request = session.get(ForgetRequest, request_id, with_for_update=True)
        if request.status != RequestStatus.running.value or request.worker_id != worker_id:
            raise RuntimeError(f"request {request_id} is no longer held by worker {worker_id}")
        version = insert_version(
            session,
            model_name=request.model_name,
            parent_version=source.version,
            architecture=source.architecture,
            kind=source.kind,
            method=request.method,
            params=request.params,
            forgotten_classes=[*source.forgotten_classes, *request.target_classes],
            forgotten_sample_ids=[*source.forgotten_sample_ids, *request.target_sample_ids],
            artifact_path=key,
            artifact_sha256=sha,
            backbone_sha256=backbone,
            metrics=version_metrics,
            model_card={**source.model_card, "derived_from": source.version},
            forget_request_id=request.id,
            created_by=f"worker:{worker_id}",
        )
        finished = utcnow()
        request.status = RequestStatus.completed.value
        request.result_version = version.version
        request.metrics = {"before": before, "after": after}
        request.progress = 1.0
        request.finished_at = finished
        record(
            session, AuditAction.forget_request_completed, f"worker:{worker_id}",
            subject_reference=request.subject_reference, forget_request_id=request.id,
            model_name=request.model_name, model_version=version.version,
            details={
                "source_version": source.version, "result_version": version.version,
                "method": request.method, "params": request.params,
                "artifact_sha256": sha,
                "before": _metrics_summary(before), "after": _metrics_summary(after),
            },
        )


def _mark_failed(ctx: ServiceContext, request_id: str, worker_id: str, error: Exception) -> None:
    reason = f"{type(error).__name__}: {error}"
    with ctx.db.session() as session:
        request = session.get(ForgetRequest, request_id)
        if request is None or request.status != RequestStatus.running.value:
            return
        request.status = RequestStatus.failed.value
        request.error = reason
        request.finished_at = utcnow()
        record(
            session, AuditAction.forget_request_failed, f"worker:{worker_id}",
            subject_reference=request.subject_reference, forget_request_id=request.id,
            model_name=request.model_name, model_version=request.source_version,
            details={"error": reason,
                     "traceback_tail": traceback.format_exc(limit=3)[-2000:]},
        )
