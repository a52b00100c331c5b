"""Carrying out a forget request: take it, run the pipeline phase by phase, publish.

The same functions serve both engines: the in-process executor (SQLite) and procrastinate
jobs (PostgreSQL). The engine only decides *when* a request runs; the request row decides
*whether* this execution may touch it. Taking a request is a transition from 'queued' that
stamps a fresh execution ID into ``worker_id``; every later write (progress, failure,
completion) is conditional on that ID and status 'running'. So an execution that was
cancelled, or whose request was retried elsewhere after its worker stalled, finds zero
rows at its next checkpoint and stops, and can never publish: a request yields at most one
version.

The steps themselves (measure, forget, measure, store, publish) are ``pipeline``'s; every
status change goes through ``transitions.transition``. On any failure the request is
marked failed with the reason, and the stored artifact is removed.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.audit.service import AuditAction
from app.context import ServiceContext
from app.db.base import utcnow
from app.db.retry import is_transient, retry_transient
from app.db.session import rowcount
from app.forgetting import pipeline
from app.forget_requests.models import ForgetRequest, RequestStatus
from app.forgetting.transitions import ExecutionLost, transition
from app.notifications.service import notify_final_status
from app.registry.models import ModelVersion

logger = logging.getLogger("unlearn.worker")

# What execute_request reports back to the engine.
COMPLETED, FAILED, LOST, RELEASED, SKIPPED = "completed", "failed", "lost", "released", "skipped"


def process_name() -> str:
    """host:pid, the prefix of every execution ID this process makes."""
    return f"{socket.gethostname()}:{os.getpid()}"


def new_execution_id(prefix: str | None = None) -> str:
    """A fresh ID per attempt: two attempts in one process never share one, so a resumed
    stale attempt cannot pass for the current one."""
    return f"{prefix or process_name()}:{uuid.uuid4().hex[:6]}"


class ExecutionReleased(RuntimeError):
    """The worker is shutting down and hands the request back instead of finishing it."""


def _take(session: Session, ctx: ServiceContext, request_id: str, execution_id: str) -> bool:
    now = utcnow()
    return transition(
        session, request_id, source=RequestStatus.queued, target=RequestStatus.running,
        actor=f"worker:{execution_id}", action=AuditAction.forget_request_started,
        values={"worker_id": execution_id, "started_at": now, "heartbeat_at": now,
                "attempts": ForgetRequest.attempts + 1, "progress": 0.0, "phase": None,
                "finished_at": None},
        details=lambda taken: {"attempt": taken.attempts,
                               "max_attempts": ctx.settings.max_attempts,
                               "worker": execution_id, "queue": taken.queue},
    ) is not None


def begin(ctx: ServiceContext, request_id: str, execution_id: str) -> bool:
    """Take a queued request for this execution; False if it is not queued (finished,
    cancelled, or already taken): then there is nothing to do."""
    with ctx.db.write_session() as session:
        return _take(session, ctx, request_id, execution_id)


def claim_next(ctx: ServiceContext, execution_id: str) -> str | None:
    """The in-process executor's pick: take the oldest queued request; None if none."""
    with ctx.db.write_session() as session:
        request_id = session.scalar(
            select(ForgetRequest.id)
            .where(ForgetRequest.status == RequestStatus.queued.value)
            .order_by(ForgetRequest.created_at, ForgetRequest.id)
            .limit(1))
        if request_id is None or not _take(session, ctx, request_id, execution_id):
            return None
        return request_id


def requeue_or_fail(session: Session, ctx: ServiceContext, request: ForgetRequest, actor: str,
                    reason: str) -> str:
    """A request whose execution vanished (worker killed or stalled, process restarted)
    goes back to the queue, or fails once it has used ``max_attempts`` attempts. The caller
    holds the row (locked). Returns 'requeued' or 'failed'."""
    max_attempts = ctx.settings.max_attempts
    details: dict[str, Any] = {
        "previous_worker": request.worker_id, "attempt": request.attempts,
        "max_attempts": max_attempts, "reason": reason,
        "last_heartbeat_at": (request.heartbeat_at.isoformat()
                              if request.heartbeat_at else None)}
    if request.attempts >= max_attempts:
        error = (f"abandoned after {request.attempts} attempt(s) "
                 f"(max_attempts={max_attempts}): {reason}")
        transition(session, request.id, source=RequestStatus.running,
                   target=RequestStatus.failed, actor=actor,
                   action=AuditAction.forget_request_failed,
                   values={"worker_id": None, "error": error, "finished_at": utcnow()},
                   details={**details, "error": error})
        return "failed"
    transition(session, request.id, source=RequestStatus.running, target=RequestStatus.queued,
               actor=actor, action=AuditAction.forget_request_requeued,
               values={"worker_id": None, "progress": 0.0, "phase": None}, details=details)
    return "requeued"


def requeue_orphans(ctx: ServiceContext, actor: str) -> int:
    """In-process executor start: a request found 'running' was left by a previous run of
    this process (it died); only this process runs requests, so it is requeued (or failed
    after max_attempts) without any lease."""
    with ctx.db.write_session() as session:
        orphans = list(session.scalars(
            select(ForgetRequest).where(ForgetRequest.status == RequestStatus.running.value)))
        for request in orphans:
            requeue_or_fail(session, ctx, request, actor,
                            f"found running after a restart (worker {request.worker_id})")
    if orphans:
        logger.warning("requeued %d request(s) left running by a previous process",
                       len(orphans))
    return len(orphans)


def release(ctx: ServiceContext, request_id: str, execution_id: str, reason: str) -> bool:
    """Hand a held request back to the queue (graceful shutdown). The interrupted attempt
    does not count."""
    with ctx.db.write_session() as session:
        return transition(
            session, request_id, source=RequestStatus.running, target=RequestStatus.queued,
            held_by=execution_id, actor=f"worker:{execution_id}",
            action=AuditAction.forget_request_released,
            values={"worker_id": None, "progress": 0.0, "phase": None,
                    "attempts": ForgetRequest.attempts - 1},
            details={"reason": reason, "worker": execution_id},
        ) is not None


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


# Writes to the request row while it runs: a phase change at most every PHASE_WRITE_S, a
# fraction at most every FRACTION_WRITE_S. A class request runs all its phases in well
# under PHASE_WRITE_S and writes nothing between being taken and being published (nobody
# could watch its phases anyway, and each write is a commit); a long one shows each phase
# within PHASE_WRITE_S of its start.
PHASE_WRITE_S = 0.5
FRACTION_WRITE_S = 1.0


class ExecutionProgress:
    """The progress callback handed to a method: the current phase and the fraction done
    within it, written to the request row (throttled, above). Every write is conditional on
    this execution still holding the request, so each is also the checkpoint where a
    cancelled or taken-over execution stops; and ``should_stop`` (worker shutdown) makes it
    release the request. Each phase is logged once, with the request ID."""

    def __init__(self, ctx: ServiceContext, request_id: str, execution_id: str,
                 should_stop: Callable[[], bool] | None = None):
        self.ctx = ctx
        self.request_id = request_id
        self.execution_id = execution_id
        self.should_stop = should_stop
        self.current: str | None = None
        self.fraction = 0.0
        self.phase_unwritten = False
        self.started = self.last_write = time.monotonic()

    def checkpoint(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise ExecutionReleased("worker shutting down")

    def _write(self, **values) -> None:
        self.last_write = time.monotonic()
        with self.ctx.db.session() as session:
            held = rowcount(session.execute(
                update(ForgetRequest)
                .where(ForgetRequest.id == self.request_id,
                       ForgetRequest.worker_id == self.execution_id,
                       ForgetRequest.status == RequestStatus.running.value)
                .values(heartbeat_at=utcnow(), **values)
            )) == 1
        if not held:
            raise ExecutionLost(f"request {self.request_id} is no longer held by "
                                f"{self.execution_id} (cancelled, or retried elsewhere)")

    def _flush(self, interval: float) -> None:
        if time.monotonic() - self.last_write < interval:
            return
        values: dict[str, float | str | None] = {"progress": self.fraction}
        if self.phase_unwritten:
            values["phase"] = self.current
        try:
            retry_transient(lambda: self._write(**values),
                            what=f"progress of request {self.request_id}")
        except Exception as error:
            if not is_transient(error):
                raise
            # Progress is informational: a database that stays away for a few seconds
            # costs this report, never the running work (the next report writes again).
            self.last_write = time.monotonic()
            logger.warning("progress of request %s not written: %s", self.request_id, error)
            return
        self.phase_unwritten = False

    def phase(self, name: str) -> None:
        self.checkpoint()
        self.current, self.fraction, self.phase_unwritten = name, 0.0, True
        logger.info("request %s: phase %s (worker %s, %.0f ms in)", self.request_id, name,
                    self.execution_id, 1000 * (time.monotonic() - self.started))
        self._flush(PHASE_WRITE_S)

    def __call__(self, fraction: float) -> None:
        self.checkpoint()
        self.fraction = max(0.0, min(1.0, float(fraction)))
        self._flush(PHASE_WRITE_S if self.phase_unwritten else FRACTION_WRITE_S)


def run_request(ctx: ServiceContext, request_id: str, execution_id: str,
                should_stop: Callable[[], bool] | None = None) -> str:
    """Take the request if it is queued and carry it out; SKIPPED if it was not queued."""
    if not begin(ctx, request_id, execution_id):
        logger.info("request %s is not queued; nothing to run", request_id)
        return SKIPPED
    return execute_request(ctx, request_id, execution_id, should_stop)


def execute_request(ctx: ServiceContext, request_id: str, execution_id: str,
                    should_stop: Callable[[], bool] | None = None) -> str:
    """Run a taken request to completion or failure; returns what became of it. Never
    raises for method errors.

    ``should_stop`` (worker shutdown) makes the run stop at its next checkpoint and release
    the request to the queue."""
    outcome = _execute(ctx, request_id, execution_id, should_stop)
    # Metrics and the completion webhook (a no-op unless the request is now final).
    notify_final_status(ctx, request_id, execution_id)
    return outcome


def _execute(ctx: ServiceContext, request_id: str, execution_id: str,
             should_stop: Callable[[], bool] | None) -> str:
    stored_key: str | None = None
    progress = ExecutionProgress(ctx, request_id, execution_id, should_stop)
    try:
        outcome = pipeline.forget(ctx, request_id, progress)
        progress.phase("publishing")
        stored_key = pipeline.store(ctx, outcome)
        pipeline.publish(ctx, outcome, key=stored_key, execution_id=execution_id)
        logger.info("request %s: completed by %s in %.0f ms", request_id, execution_id,
                    1000 * (time.monotonic() - progress.started))
        return COMPLETED
    except ExecutionLost as error:
        # Cancelled, or another worker has (or will have) the request: touch nothing.
        logger.warning("request %s: %s; this attempt publishes nothing", request_id, error)
        _discard(ctx, stored_key)
        return LOST
    except ExecutionReleased:
        _discard(ctx, stored_key)
        if release(ctx, request_id, execution_id, "worker shutting down"):
            logger.info("released request %s back to the queue", request_id)
            return RELEASED
        return LOST
    except Exception as error:  # the method, the data or the store failed: record why
        logger.exception("forget request %s failed", request_id)
        _discard(ctx, stored_key)
        _mark_failed(ctx, request_id, execution_id, error)
        return FAILED


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


def _mark_failed(ctx: ServiceContext, request_id: str, execution_id: str,
                 error: Exception) -> None:
    """Record why the run failed; a request no longer held is left to whoever holds it."""
    reason = f"{type(error).__name__}: {error}"
    with ctx.db.write_session() as session:
        transition(session, request_id, source=RequestStatus.running,
                   target=RequestStatus.failed, held_by=execution_id,
                   actor=f"worker:{execution_id}", action=AuditAction.forget_request_failed,
                   values={"error": reason, "finished_at": utcnow()},
                   details={"error": reason,
                            "traceback_tail": traceback.format_exc(limit=3)[-2000:]})
