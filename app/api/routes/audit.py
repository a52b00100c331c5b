from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from app.api.deps import CtxDep, SessionDep
from app.api.pagination import decode_id_cursor, encode_cursor
from app.audit import export
from app.audit.chain import ChainHead
from app.audit.checkpoints import verify_with_checkpoint
from app.audit.schemas import AuditCheckpointVerification, AuditEntryRead, AuditLogPage
from app.audit.service import AuditAction, AuditFilter, query
from app.auth.deps import require
from app.auth.service import Role
from app.core.errors import InvalidInputError

router = APIRouter(tags=["audit"])
AUDITORS = [Depends(require(Role.auditor))]


def _aware(value: dt.datetime | None, field: str) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        raise InvalidInputError(f"{field} needs a timezone (e.g. 2026-01-01T00:00:00Z)", field)
    try:
        return value.astimezone(dt.timezone.utc) if value is not None else None
    except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00 has no UTC equivalent
        raise InvalidInputError(f"{field} is out of range", field) from None


@router.get("/audit-log", response_model=AuditLogPage, dependencies=AUDITORS)
def read_audit_log(
    session: SessionDep,
    since: Annotated[dt.datetime | None, Query(description="Inclusive lower bound")] = None,
    until: Annotated[dt.datetime | None, Query(description="Exclusive upper bound")] = None,
    action: Annotated[AuditAction | None, Query()] = None,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    subject_reference: Annotated[str | None, Query(max_length=200)] = None,
    model_version: Annotated[int | None, Query(ge=1, le=2_147_483_647)] = None,
    forget_request_id: Annotated[str | None, Query(max_length=36)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> AuditLogPage:
    before_id = decode_id_cursor(cursor)
    filters = AuditFilter(
        since=_aware(since, "since"), until=_aware(until, "until"),
        action=action.value if action else None, actor=actor,
        subject_reference=subject_reference, model_version=model_version,
        forget_request_id=forget_request_id,
    )
    rows, next_id = query(session, filters, limit, before_id)
    return AuditLogPage(
        items=[AuditEntryRead.model_validate(row, from_attributes=True) for row in rows],
        next_cursor=encode_cursor(next_id) if next_id is not None else None,
    )


@router.get("/audit-log/verify", response_model=AuditCheckpointVerification,
            dependencies=AUDITORS)
def verify_audit_log(
    session: SessionDep,
    ctx: CtxDep,
    anchor_seq: Annotated[int | None, Query(ge=1, le=2_147_483_647, description=(
        "With anchor_hash: an entry recorded earlier (e.g. a certificate's chain head) "
        "that the chain must still contain unchanged."))] = None,
    anchor_hash: Annotated[str | None, Query(pattern="^[0-9a-f]{64}$")] = None,
) -> AuditCheckpointVerification:
    """Recompute the hash chain and check it against the latest signed checkpoint (kept
    outside the database); name the first broken entry or the checkpoint finding."""
    if (anchor_seq is None) != (anchor_hash is None):
        raise InvalidInputError("give both anchor_seq and anchor_hash, or neither",
                                "anchor_seq" if anchor_seq is None else "anchor_hash")
    anchor = (ChainHead(anchor_seq, anchor_hash)
              if anchor_seq is not None and anchor_hash is not None else None)
    return AuditCheckpointVerification(**verify_with_checkpoint(ctx, session, anchor))


@router.get("/audit-log/export", dependencies=AUDITORS, response_class=StreamingResponse,
            responses={200: {"description": "The whole log in chain order, hashes included.",
                             "content": {export.JSONL_TYPE: {}, export.CSV_TYPE: {}}}})
def export_audit_log(
    ctx: CtxDep,
    format: Annotated[export.ExportFormat, Query(description="jsonl (verifiable with "
                      "`unlearn audit verify --file`) or csv")] = export.ExportFormat.jsonl,
) -> StreamingResponse:
    media_type = export.JSONL_TYPE if format is export.ExportFormat.jsonl else export.CSV_TYPE
    return StreamingResponse(
        export.stream(ctx.db, format), media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="audit-log.{format.value}"'})
