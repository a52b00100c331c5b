"""HTTP routes of data subjects: thin wrappers over ``footprint``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from starlette.concurrency import run_in_threadpool

from app.api.deps import ActorDep, CtxDep
from app.auth.deps import require
from app.auth.service import Role
from app.subjects.footprint import footprint

router = APIRouter(tags=["data subjects"])


@router.get("/subjects/{subject_id}/footprint",
            dependencies=[Depends(require(Role.privacy_officer, Role.auditor))])
async def read_footprint(
    subject_id: Annotated[str, Path(min_length=1, max_length=500,
                                    description="The subject's identifier in the datasets' "
                                                "subject_id column (hashed, never stored).")],
    ctx: CtxDep,
    actor: ActorDep,
) -> dict[str, Any]:
    """Where the service holds the subject's training samples, and what forgot them."""
    return await run_in_threadpool(footprint, ctx, subject_id, actor)
