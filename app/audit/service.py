"""Writing and querying the audit log. Every state change in the service calls ``record``
inside the same transaction as the change itself, so an entry exists iff the change does."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, select, update
from sqlalchemy.orm import Session

from app.audit.chain import ChainHead, Verification, entry_hash, normalize_details, verify_records
from app.audit.models import AuditChainHead, AuditEntry
from app.db.base import utcnow
from app.db.session import rowcount

CHAIN_HEAD_ID = 1


class AuditAction(str, enum.Enum):
    model_created = "model.created"
    model_registered = "model.registered"
    version_promoted = "model.promoted"
    forget_request_received = "forget_request.received"
    forget_request_started = "forget_request.started"
    forget_request_completed = "forget_request.completed"
    # Finished, but the new version failed (or lacked evidence for) an acceptance criterion.
    forget_request_unverified = "forget_request.unverified"
    forget_request_failed = "forget_request.failed"
    # Durable execution: a vanished or stalled worker's request back in the queue, a
    # request handed back by a worker shutting down, and one cancelled by a person.
    forget_request_requeued = "forget_request.requeued"
    forget_request_released = "forget_request.released"
    forget_request_cancelled = "forget_request.cancelled"
    key_created = "api_key.created"
    key_revoked = "api_key.revoked"
    artifact_integrity_failed = "artifact.integrity_failed"
    # Unreferenced version files removed by `unlearn artifacts gc`.
    artifacts_collected = "artifacts.collected"
    dataset_registered = "dataset.registered"
    # Completion webhooks: every attempt to POST a request's final status to its
    # callback_url, with its outcome (delivered, retrying, gave_up, refused).
    webhook_delivery_attempted = "webhook.delivery_attempt"
    # Failed authentications, aggregated: one entry per client address per window.
    auth_failures = "auth.failures"
    # Data subjects (issue 10).
    superseded_prediction = "prediction.superseded_version"
    artifact_purged = "model.artifact_purged"
    footprint_read = "subject.footprint_read"


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
        created_at=utcnow(),
        action=action.value,
        actor=actor,
        subject_reference=subject_reference,
        forget_request_id=forget_request_id,
        model_name=model_name,
        model_version=model_version,
        details=normalize_details(details),
    )
    _append(session, entry)
    return entry


def _append(session: Session, entry: AuditEntry) -> None:
    """Link the entry to the chain. Incrementing the head row first takes its row lock
    (PostgreSQL) or the database write lock (SQLite) until the transaction ends, so
    concurrent appends queue up and each sees the head its predecessor left."""
    head_table = cast(Table, AuditChainHead.__table__)  # a mapped class's table (typed FromClause)
    bumped = rowcount(session.execute(
        update(head_table).where(head_table.c.id == CHAIN_HEAD_ID)
        .values(seq=head_table.c.seq + 1)
    ))
    if bumped != 1:
        raise RuntimeError("the audit chain head row is missing: run `unlearn db upgrade`")
    seq, previous = session.execute(
        select(head_table.c.seq, head_table.c.head_hash).where(head_table.c.id == CHAIN_HEAD_ID)
    ).one()
    # Dated while holding the head's lock: an entry appended after a checkpoint read the
    # head is never dated before that checkpoint (app.audit.checkpoints relies on it).
    entry.created_at = utcnow()
    entry.seq = seq
    entry.prev_hash = previous
    entry.entry_hash = entry_hash(previous, entry_record(entry))
    session.add(entry)
    session.flush()
    session.execute(update(head_table).where(head_table.c.id == CHAIN_HEAD_ID)
                    .values(head_hash=entry.entry_hash))


def record_artifact_failure(db, error, actor: str, **aggregate: Any) -> None:
    """Audit a refusal to serve a corrupted or missing model file (its own transaction: the
    request that found it fails). ``aggregate``: the window's figures when refusals are
    audited once per window (``app.audit.aggregation``)."""
    with db.session() as session:
        record(session, AuditAction.artifact_integrity_failed, actor,
               model_name=error.model_name, model_version=error.version,
               details={"expected_sha256": error.expected_sha256, "reason": error.reason,
                        **aggregate})


def entry_record(entry: AuditEntry) -> dict[str, Any]:
    """An entry as a plain dict: what is hashed, exported and put into certificates."""
    return {name: getattr(entry, name) for name in RECORD_COLUMNS}


def chain_head(session: Session) -> ChainHead:
    row = session.get(AuditChainHead, CHAIN_HEAD_ID)
    if row is None:
        raise RuntimeError("the audit chain head row is missing: run `unlearn db upgrade`")
    return ChainHead(seq=row.seq, hash=row.head_hash)


RECORD_COLUMNS = ("id", "seq", "created_at", "actor", "action", "subject_reference",
                  "forget_request_id", "model_name", "model_version", "details",
                  "prev_hash", "entry_hash")


def iter_records(session: Session, batch_size: int = 500,
                 forget_request_id: str | None = None,
                 filters: AuditFilter | None = None) -> Iterator[dict[str, Any]]:
    """Entries as dicts in chain order, read in batches (keyset on seq) so that memory
    stays flat however long the log is; only those ``filters`` admit, when given."""
    columns = [getattr(AuditEntry, name) for name in RECORD_COLUMNS]
    last = 0
    while True:
        statement = (select(*columns).where(AuditEntry.seq > last)
                     .order_by(AuditEntry.seq).limit(batch_size))
        if forget_request_id is not None:
            statement = statement.where(AuditEntry.forget_request_id == forget_request_id)
        if filters is not None:
            statement = filtered(statement, filters)
        batch = [dict(row) for row in session.execute(statement).mappings()]
        if not batch:
            return
        yield from batch
        last = batch[-1]["seq"]


def verify_chain(session: Session, anchor: ChainHead | None = None) -> Verification:
    head = chain_head(session)
    return verify_records(iter_records(session), head=head, anchor=anchor)


@dataclass(frozen=True)
class AuditFilter:
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    action: str | None = None
    actor: str | None = None
    subject_reference: str | None = None
    model_version: int | None = None
    forget_request_id: str | None = None


def filtered(statement: Any, filters: AuditFilter) -> Any:
    """``statement`` (a select over audit entries) narrowed to what ``filters`` admit."""
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
    return statement


def query(session: Session, filters: AuditFilter, limit: int,
          before_id: int | None = None) -> tuple[list[AuditEntry], int | None]:
    """Newest first; returns the page and the cursor (an entry id) for the next page."""
    statement = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit + 1)
    if before_id is not None:
        statement = statement.where(AuditEntry.id < before_id)
    rows = list(session.scalars(filtered(statement, filters)))
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].id
    return rows, None
