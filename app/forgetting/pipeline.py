"""What a forget request does, step by step: load the source version, measure it, run the
method, measure the result (and verify it against the request's acceptance criteria),
store the artifact, publish the version.

``forget`` runs the steps up to the measured result and returns one ``ForgetOutcome``;
``store`` writes its artifact; ``publish`` commits the version row, the request's
completion (a transition, with its audit entry) and what follows from it, together. Who
may run these steps for a request, and what happens when it is lost, cancelled or fails,
is ``execution``'s business.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.exc import IntegrityError

from app.audit.service import AuditAction
from app.context import ServiceContext
from app.db.base import utcnow
from app.evaluation.metrics import RequestMetrics, VersionMetrics
from app.forget_requests.models import ForgetRequest, RequestStatus
from app.forgetting.transitions import ExecutionLost, transition
from app.registry.artifacts import sha256_bytes
from app.registry.model_kinds import model_backbone_sha256, model_bytes
from app.registry.models import ModelVersion
from app.registry.service import artifact_key, get_version, insert_version
from app.subjects.supersession import after_publish
from app.unlearning.base import ForgetTarget
from app.unlearning.catalog import get_method
from app.verification.service import run_method, verification_summary, verify_request

logger = logging.getLogger("unlearn.worker")


class PhasedProgress(Protocol):
    """The execution's progress report: a phase name, then fractions of that phase."""

    def phase(self, name: str) -> None: ...

    def __call__(self, fraction: float) -> None: ...


@dataclass(frozen=True)
class ForgetOutcome:
    """A request's result, measured and verified, not yet stored or published."""

    request: ForgetRequest  # as loaded when the run began
    source: ModelVersion
    payload: bytes  # the artifact
    artifact_sha256: str
    backbone_sha256: str
    before: RequestMetrics
    after: RequestMetrics
    version_metrics: VersionMetrics
    forget_report: dict[str, Any] | None
    verification: dict[str, Any] | None

    @property
    def verified(self) -> bool:
        return self.verification is None or self.verification["passed"]


def forget(ctx: ServiceContext, request_id: str, progress: PhasedProgress) -> ForgetOutcome:
    """Load, measure before, run the method, measure after and verify."""
    with ctx.db.session() as session:
        request = session.get(ForgetRequest, request_id)
        assert request is not None  # taken by this execution, so it exists
        source = get_version(session, request.model_name, request.source_version)
    method = get_method(request.method)
    assert method is not None  # checked when the request was filed
    params = method.Params.model_validate(request.params)
    target = ForgetTarget(tuple(request.target_classes),
                          tuple(request.target_sample_ids),
                          prior_classes=tuple(source.forgotten_classes),
                          prior_sample_ids=tuple(source.forgotten_sample_ids))
    data = ctx.model_data(request.model_name)

    progress.phase("metrics")
    source_model = ctx.models.get(source)
    before = ctx.evaluator.request_metrics(source_model, source.backbone_sha256, data,
                                           target, source.artifact_sha256)

    working = copy.deepcopy(source_model)
    for parameter in working.parameters():
        parameter.requires_grad_(True)
    _test_only_delay(ctx, progress)
    acceptance = request.acceptance or {}
    forgotten = run_method(ctx, method, working, target=target, params=params, data=data,
                           progress=progress, acceptance=acceptance, source=source,
                           source_model=source_model)
    forgotten.eval()

    progress.phase("metrics")
    payload, state = model_bytes(forgotten)
    sha = sha256_bytes(payload)
    backbone = model_backbone_sha256(forgotten, state)
    after = ctx.evaluator.request_metrics(forgotten, backbone, data, target, sha)
    forget_report = getattr(forgotten, "forget_report", None)
    verification = verify_request(
        ctx, source=source, method=method, target=target, data=data, acceptance=acceptance,
        before=before, after=after,
        source_outcomes=ctx.evaluator.outcomes(source_model, source.backbone_sha256, data,
                                               source.artifact_sha256),
        result_outcomes=ctx.evaluator.outcomes(forgotten, backbone, data, sha),
        forget_report=forget_report)
    return ForgetOutcome(
        request=request, source=source, payload=payload, artifact_sha256=sha,
        backbone_sha256=backbone, before=before, after=after,
        version_metrics=ctx.evaluator.version_metrics(forgotten, backbone, data, sha),
        forget_report=forget_report, verification=verification)


def _test_only_delay(ctx: ServiceContext, progress: PhasedProgress) -> None:
    """UNLEARN_TEST_EXECUTION_DELAY_S (tests only): stretch the run so that a fault test
    can kill or stop the process mid-request. Sleeps in short steps that report progress
    (each a checkpoint)."""
    total = ctx.settings.test_execution_delay_s
    if total <= 0:
        return
    progress.phase("delay (test only)")
    deadline = time.monotonic() + total
    while (left := deadline - time.monotonic()) > 0:
        progress(max(0.01, 1 - left / total))
        time.sleep(min(0.1, left))


def store(ctx: ServiceContext, outcome: ForgetOutcome) -> str:
    """Write the artifact under a fresh unique key; returns the key."""
    key = artifact_key(outcome.request.model_name)
    ctx.store.put(key, outcome.payload)
    return key


PUBLISH_ATTEMPTS = 5


def publish(ctx: ServiceContext, outcome: ForgetOutcome, *, key: str,
            execution_id: str) -> None:
    """Commit the version row, the request's completion and the audit entry together.

    Version numbers are max+1 under the registered model's row lock; should two
    publications still collide on (model, version) (the unique constraint says so), the
    transaction is rolled back and retried with the next number."""
    for attempt in range(1, PUBLISH_ATTEMPTS + 1):
        try:
            _publish_once(ctx, outcome, key=key, execution_id=execution_id)
            return
        except IntegrityError:
            if attempt == PUBLISH_ATTEMPTS:
                raise
            logger.info("request %s: version number taken, retrying (%d)",
                        outcome.request.id, attempt)
            time.sleep(0.01 * attempt)


def _publish_once(ctx: ServiceContext, outcome: ForgetOutcome, *, key: str,
                  execution_id: str) -> None:
    request, source = outcome.request, outcome.source
    actor = f"worker:{execution_id}"
    with ctx.db.write_session() as session:
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
            artifact_sha256=outcome.artifact_sha256,
            backbone_sha256=outcome.backbone_sha256,
            metrics=dict(outcome.version_metrics),
            model_card={**source.model_card, "derived_from": source.version,
                        **({"forget_report": outcome.forget_report}
                           if outcome.forget_report else {})},
            forget_request_id=request.id,
            created_by=actor,
        )
        finished = utcnow()
        # Conditional on this execution still holding the request; on PostgreSQL its row
        # lock also orders this publication against cancellation and stalled-job recovery.
        # Lost: raising rolls the version row back with it.
        completed = transition(
            session, request.id, source=RequestStatus.running,
            target=RequestStatus.completed if outcome.verified else RequestStatus.unverified,
            held_by=execution_id, actor=actor,
            action=(AuditAction.forget_request_completed if outcome.verified
                    else AuditAction.forget_request_unverified),
            values={"progress": 1.0, "phase": "publishing", "finished_at": finished,
                    "heartbeat_at": finished, "error": None,
                    "result_version": version.version,
                    "metrics": {"before": outcome.before, "after": outcome.after},
                    "verification": outcome.verification},
            model_version=version.version,
            details=lambda held: {
                "source_version": source.version, "result_version": version.version,
                "method": held.method, "params": held.params,
                "artifact_sha256": outcome.artifact_sha256, "attempt": held.attempts,
                "worker": execution_id,
                "before": metrics_summary(outcome.before),
                "after": metrics_summary(outcome.after),
                **({"verification": verification_summary(outcome.verification)}
                   if outcome.verification else {}),
            })
        if completed is None:
            raise ExecutionLost(f"request {request.id} is no longer held by {execution_id} "
                                f"(cancelled, or retried elsewhere)")
        # Production that still holds the erased data is promoted away or reported.
        after_publish(session, completed, version, actor)


def metrics_summary(metrics: RequestMetrics) -> dict[str, Any]:
    """Metrics without confusion matrices, small enough for an audit entry."""
    summary: dict[str, Any] = {}
    for name, value in metrics.items():
        if isinstance(value, dict):
            summary[name] = {k: v for k, v in value.items() if k != "confusion_matrix"}
        else:
            summary[name] = value
    return summary
