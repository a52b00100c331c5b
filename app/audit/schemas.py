from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field


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
    seq: int
    prev_hash: str
    entry_hash: str


class AuditLogPage(BaseModel):
    items: list[AuditEntryRead]
    next_cursor: str | None


class AuditVerification(BaseModel):
    intact: bool
    entries_checked: int
    head_seq: int = Field(description="seq of the last entry that verified")
    head_hash: str = Field(description="hash of the last entry that verified")
    broken_seq: int | None = Field(default=None, description="the first entry that does not fit")
    broken_id: int | None = None
    reason: str | None = None
    chain_intact: bool = Field(default=True, description=(
        "The hash chain and its head verify (with intact false, an anchor mismatch alone "
        "leaves this true)"))
    anchor_matches: bool | None = Field(default=None, description=(
        "With anchor_seq/anchor_hash: whether the chain holds that entry unchanged"))


class CheckpointCheck(BaseModel):
    finding: str = Field(description="intact, no_checkpoint, missing_tail, rewritten, "
                         "tampered, forged_entry or checkpoint_invalid")
    detail: str
    checkpoint_seq: int | None = None
    checkpoint_hash: str | None = None
    checkpoint_time: str | None = None
    unanchored_entries: int = Field(default=0, description=(
        "entries after the checkpoint: they chain correctly but no checkpoint signs them yet"))
    location: str | None = None


class AuditCheckpointVerification(AuditVerification):
    """``intact`` holds only when the chain holds and agrees with the latest checkpoint."""

    checkpoint: CheckpointCheck | None = None
