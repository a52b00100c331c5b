from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy.orm import Session

from app.api.deps import get_session
from app.api.pagination import decode_cursor, encode_cursor
from app.audit.schemas import AuditEntryRead, AuditLogPage
from app.audit.service import AuditAction, AuditFilter, query
from app.core.errors import InvalidInputError

router = APIRouter(tags=["audit"])


def _aware(value: dt.datetime | None, field: str) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        raise InvalidInputError(f"{field} needs a timezone (e.g. 2026-01-01T00:00:00Z)", field)
    return value


@router.get("/audit-log", response_model=AuditLogPage)
def read_audit_log(
    session: Annotated[Session, Depends(get_session)],
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
    before_id = decode_cursor(cursor)
    if before_id is not None and not isinstance(before_id, int):
        raise InvalidInputError("cursor is not one this service issued", "cursor")
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
