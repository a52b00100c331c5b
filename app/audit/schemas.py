from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel


class AuditEntryRead(BaseModel):
    id: int
    created_at: dt.datetime
    actor: str
    action: str
    subject_reference: str | None
    forget_request_id: str | None
    model_name: str | None
    model_version: int | None
    details: dict[str, Any]


class AuditLogPage(BaseModel):
    items: list[AuditEntryRead]
    next_cursor: str | None
