"""Probes. Both are coroutines that never use the request thread pool or the request
database pool: liveness touches nothing at all, readiness uses its own connection and
thread (``app.health.probe``)."""

from __future__ import annotations


from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

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
async def healthz() -> Health:
    return Health(status="ok")


async def readiness(request: Request) -> Readiness:
    """The one readiness check, for ``/readyz`` and the Open Inference Protocol's
    ``/v2/health/ready``: on the probe's own thread and connection (``app.health.probe``),
    so that neither queues behind the traffic it judges."""
    try:
        current, head = await request.app.state.readiness.migration_status()
    except TimeoutError:
        return Readiness(status="unavailable", database="unreachable: no answer in time",
                         migrations="unknown")
    except Exception as error:  # database unreachable
        return Readiness(status="unavailable", database=f"unreachable: {type(error).__name__}",
                         migrations="unknown")
    at_head = current == head
    return Readiness(status="ready" if at_head else "unavailable", database="ok",
                     migrations="at head" if at_head else "behind",
                     current_revision=current, head_revision=head)


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(request: Request) -> JSONResponse:
    body = await readiness(request)
    return JSONResponse(body.model_dump(), status_code=200 if body.status == "ready" else 503)
