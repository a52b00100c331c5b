"""Artifact garbage collection: files in the store that no version references.

A worker killed after writing a version's file but before publishing its row leaves that
file (and, killed mid-write, a hidden ``.tmp-`` file) in the store for ever. ``collect``
removes such files once they are older than a grace period, so that a write in progress
(file written, row not yet committed) is never taken for garbage. Only names the registry
writes (``<model>/<32 hex>.safetensors`` and their temporaries) are candidates: anything
else in the store (the shipped base weights under ``base/``) is left alone.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

from sqlalchemy import select

from app.audit.service import AuditAction, record
from app.registry.models import ModelVersion

VERSION_FILE = re.compile(r"^[^/]+/(\.tmp-[0-9a-f]{32}-)?[0-9a-f]{32}\.safetensors$")


@dataclass
class Collection:
    removed: list[str] = field(default_factory=list)   # or, in a dry run, to be removed
    too_young: list[str] = field(default_factory=list)  # unreferenced, within the grace
    referenced: int = 0
    dry_run: bool = False


def collect(ctx, grace_hours: float, actor: str, dry_run: bool = False,
            now: dt.datetime | None = None) -> Collection:
    """Remove unreferenced version files older than ``grace_hours`` (audited)."""
    if grace_hours < 0:
        raise ValueError("the grace period cannot be negative")
    now = now or dt.datetime.now(dt.timezone.utc)
    cutoff = now - dt.timedelta(hours=grace_hours)
    with ctx.db.session() as session:
        referenced = set(session.scalars(select(ModelVersion.artifact_path)))
    result = Collection(referenced=len(referenced), dry_run=dry_run)
    for key, modified in ctx.store.listing():
        if key in referenced or not VERSION_FILE.match(key):
            continue
        if modified > cutoff:
            result.too_young.append(key)
            continue
        result.removed.append(key)
    # Read the references again just before deleting: a version published meanwhile
    # keeps its file (its file is older than the grace only if its writer stalled).
    with ctx.db.session() as session:
        referenced = set(session.scalars(select(ModelVersion.artifact_path)))
    result.removed = [key for key in result.removed if key not in referenced]
    if dry_run or not result.removed:
        return result
    for key in result.removed:
        ctx.store.delete(key)
    with ctx.db.session() as session:
        record(session, AuditAction.artifacts_collected, actor,
               details={"removed": result.removed, "grace_hours": grace_hours})
    return result
