"""The life of a forget request: which status may follow which, and the one function that
moves a request from one to the next, always with its audit entry.

    queued  -> running (taken by an execution), cancelled
    running -> completed, unverified (published), failed, cancelled,
               queued (released on shutdown, or requeued after its worker vanished)
    completed, unverified, failed, cancelled: final

A move is a conditional UPDATE: it happens only if the row is still in the status the
caller expects (and, for a running request, still held by the caller's execution). So two
parties racing for a request (an execution publishing, an operator cancelling, a sweeper
requeueing) cannot both win: the loser finds no row and is told so (``None``). A move the
table forbids is a programming error and raises ``IllegalTransition`` before anything is
written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from app.audit.service import AuditAction, record
from app.db.session import rowcount
from app.forget_requests.finished import announce_finished
from app.forget_requests.models import ForgetRequest, RequestStatus

_S = RequestStatus

ALLOWED: Mapping[RequestStatus, frozenset[RequestStatus]] = {
    _S.queued: frozenset({_S.running, _S.cancelled}),
    _S.running: frozenset({_S.queued, _S.completed, _S.unverified, _S.failed, _S.cancelled}),
    _S.completed: frozenset(),
    _S.unverified: frozenset(),
    _S.failed: frozenset(),
    _S.cancelled: frozenset(),
}

# The audit details of a move: given as they are, or computed from the row after the move
# (the attempt number a take has just incremented, say).
Details = Mapping[str, Any] | Callable[[ForgetRequest], Mapping[str, Any]]


class IllegalTransition(ValueError):
    """A move the table above forbids (from a final status, or skipping a step)."""

    def __init__(self, request_id: str, source: RequestStatus, target: RequestStatus):
        allowed = ", ".join(sorted(s.value for s in ALLOWED[source])) or "nothing (final)"
        super().__init__(f"forget request {request_id} cannot go from {source.value!r} to "
                         f"{target.value!r}; from {source.value!r} it may go to: {allowed}")
        self.request_id, self.source, self.target = request_id, source, target


class ExecutionLost(RuntimeError):
    """The request is no longer held by this execution (cancelled, or retried by another
    worker after this one stalled): stop, publish nothing, leave the row alone."""


def check_transition(request_id: str, source: RequestStatus, target: RequestStatus) -> None:
    if target not in ALLOWED[source]:
        raise IllegalTransition(request_id, source, target)


def transition(session: Session, request_id: str, *, source: RequestStatus,
               target: RequestStatus, actor: str, action: AuditAction, details: Details,
               held_by: str | None = None, values: Mapping[str, Any] | None = None,
               model_version: int | None = None) -> ForgetRequest | None:
    """Move the request from ``source`` to ``target``, setting ``values`` on the row too,
    and append the audit entry ``action`` in the same transaction (the caller's session:
    both commit or neither does).

    Conditional on the row being in ``source`` and, with ``held_by``, held by that
    execution; returns the updated request, or None when the condition did not hold
    (another party moved it first). The audit entry names the request's source version
    unless ``model_version`` is given."""
    check_transition(request_id, source, target)
    conditions = [ForgetRequest.id == request_id, ForgetRequest.status == source.value]
    if held_by is not None:
        conditions.append(ForgetRequest.worker_id == held_by)
    result = session.execute(
        update(ForgetRequest).where(*conditions)
        .values(status=target.value, **(values or {})))
    if rowcount(result) != 1:
        return None
    request = session.get(ForgetRequest, request_id)
    assert request is not None  # the UPDATE just matched it
    session.refresh(request)
    record(session, action, actor, subject_reference=request.subject_reference,
           forget_request_id=request.id, model_name=request.model_name,
           model_version=request.source_version if model_version is None else model_version,
           details=dict(details(request) if callable(details) else details))
    if not ALLOWED[target]:  # final: wake the API processes waiting on it (at commit)
        announce_finished(session, request_id)
    return request
