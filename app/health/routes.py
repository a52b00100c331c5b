from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app.api.deps import get_ctx
from app.core.context import ServiceContext
from app.db.migrations import migration_status

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    database: str
    migrations: str
    current_revision: str | None = None
    head_revision: str | None = None


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
def readyz(ctx: Annotated[ServiceContext, Depends(get_ctx)]):
    try:
        current, head = migration_status(ctx.db.engine)
    except Exception as error:  # database unreachable
        body = Readiness(status="unavailable", database=f"unreachable: {type(error).__name__}",
                         migrations="unknown")
        return JSONResponse(body.model_dump(), status_code=503)
    at_head = current == head
    body = Readiness(status="ready" if at_head else "unavailable", database="ok",
                     migrations="at head" if at_head else "behind",
                     current_revision=current, head_revision=head)
    return JSONResponse(body.model_dump(), status_code=200 if at_head else 503)
