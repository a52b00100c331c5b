"""Writing and querying the audit log. Every state change in the service calls ``record``
inside the same transaction as the change itself, so an entry exists iff the change does."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit.models import AuditEntry


class AuditAction(str, enum.Enum):
    model_registered = "model.registered"
    version_promoted = "model.promoted"
    forget_request_received = "forget_request.received"
    forget_request_started = "forget_request.started"
    forget_request_completed = "forget_request.completed"
    forget_request_failed = "forget_request.failed"
    # Durable execution: a vanished worker's request back in the queue (lease expired),
    # and a request handed back by a worker shutting down.
    forget_request_requeued = "forget_request.requeued"
    forget_request_released = "forget_request.released"


def record(
    session: Session,
    action: AuditAction,
    actor: str,
    *,
    subject_reference: str | None = None,
    forget_request_id: str | None = None,
    model_name: str | None = None,
    model_version: int | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    entry = AuditEntry(
        action=action.value,
        actor=actor,
        subject_reference=subject_reference,
        forget_request_id=forget_request_id,
        model_name=model_name,
        model_version=model_version,
        details=details or {},
    )
    session.add(entry)
    session.flush()
    return entry


@dataclass(frozen=True)
class AuditFilter:
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    action: str | None = None
    actor: str | None = None
    subject_reference: str | None = None
    model_version: int | None = None
    forget_request_id: str | None = None


def query(session: Session, filters: AuditFilter, limit: int,
          before_id: int | None = None) -> tuple[list[AuditEntry], int | None]:
    """Newest first; returns the page and the cursor (an entry id) for the next page."""
    statement = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit + 1)
    if before_id is not None:
        statement = statement.where(AuditEntry.id < before_id)
    if filters.since is not None:
        statement = statement.where(AuditEntry.created_at >= filters.since)
    if filters.until is not None:
        statement = statement.where(AuditEntry.created_at < filters.until)
    for column, value in (
        (AuditEntry.action, filters.action),
        (AuditEntry.actor, filters.actor),
        (AuditEntry.subject_reference, filters.subject_reference),
        (AuditEntry.model_version, filters.model_version),
        (AuditEntry.forget_request_id, filters.forget_request_id),
    ):
        if value is not None:
            statement = statement.where(column == value)
    rows = list(session.scalars(statement))
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].id
    return rows, None
