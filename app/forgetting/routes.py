"""HTTP routes for forget requests: thin wrappers over ``service`` and the worker."""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from sqlalchemy.orm import Session

from app.api.deps import get_actor, get_ctx, get_session
from app.api.pagination import decode_cursor, encode_cursor
from app.auth.deps import ANY_ROLE, require
from app.auth.service import Role
from app.core.context import ServiceContext
from app.core.errors import InvalidInputError
from app.forgetting import service
from app.forgetting.models import ForgetRequest, RequestStatus
from app.registry.links import version_path
from app.forgetting.schemas import (
    ForgetRequestCreate,
    ForgetRequestList,
    ForgetRequestMetrics,
    ForgetRequestRead,
    MethodInfo,
    MethodList,
    RequestLinks,
)
from app.subjects.resolution import prepare_subjects
from app.subjects.supersession import production_notice
from app.unlearning.catalog import METHODS

router = APIRouter(tags=["forget requests"])
OFFICERS = [Depends(require(Role.privacy_officer))]
READERS = [Depends(require(Role.privacy_officer, Role.auditor))]

FINISHED = {RequestStatus.completed.value, RequestStatus.failed.value}


def to_read(request: ForgetRequest, default_model: str) -> ForgetRequestRead:
    duration = None
    if request.started_at and request.finished_at:
        duration = (request.finished_at - request.started_at).total_seconds()
    metrics = request.metrics or {}
    return ForgetRequestRead(
        id=request.id,
        status=request.status,
        model_name=request.model_name,
        source_version=request.source_version,
        result_version=request.result_version,
        method=request.method,
        params=request.params,
        classes=request.target_classes,
        class_names=request.target_class_names or [],
        sample_ids=_sample_keys(request, request.target_sample_ids),
        already_forgotten_sample_ids=_sample_keys(request,
                                                  request.already_forgotten_sample_ids or []),
        requested_by=request.requested_by,
        subject_reference=request.subject_reference,
        reason=request.reason,
        subject_hashes=request.target_subject_hashes or [],
        subject_sample_count=request.subject_sample_count,
        promote=bool(request.promote),
        production_left_superseded=request.production_left_superseded,
        notice=production_notice(request),
        error=request.error,
        metrics=ForgetRequestMetrics(before=metrics.get("before"), after=metrics.get("after")),
        progress=request.progress,
        attempts=request.attempts,
        worker_id=request.worker_id,
        heartbeat_at=request.heartbeat_at,
        lease_expires_at=request.lease_expires_at,
        created_at=request.created_at,
        started_at=request.started_at,
        finished_at=request.finished_at,
        duration_s=duration,
        links=RequestLinks(
            self=f"/forget-requests/{request.id}",
            source_version=version_path(request.model_name, request.source_version,
                                        default_model),
            result_version=(version_path(request.model_name, request.result_version,
                                         default_model)
                            if request.result_version is not None else None),
        ),
    )


def _sample_keys(request: ForgetRequest, ids: list[int]) -> list[int | str]:
    """The dataset's own IDs of ``ids`` (which are among the request's targets)."""
    if request.target_sample_keys is None:
        return list(ids)
    keys = dict(zip(request.target_sample_ids, request.target_sample_keys))
    return [keys.get(i, str(i)) for i in ids]


@router.post("/forget-requests", status_code=202, response_model=ForgetRequestRead,
             dependencies=OFFICERS,
             responses={200: {"model": ForgetRequestRead,
                              "description": "Finished (with ?wait=true)"}})
def create_forget_request(
    body: ForgetRequestCreate,
    request: Request,
    response: Response,
    ctx: Annotated[ServiceContext, Depends(get_ctx)],
    actor: Annotated[str, Depends(get_actor)],
    wait: Annotated[bool, Query(description="Return once the request has finished.")] = False,
    idempotency_key: Annotated[str | None, Header(
        alias="Idempotency-Key", min_length=1, max_length=200,
        description="Retry-safe filing: the same key with the same body returns the "
                    "original request; with a different body, 409.")] = None,
) -> ForgetRequestRead:
    model_name = body.model_name or ctx.model_name
    data = ctx.model_data(model_name)
    # subject_ids become training IDs and keyed hashes here; past this line the body
    # holds only the hashes (the idempotency digest included).
    body, subjects = prepare_subjects(ctx, model_name, body, data)
    created, replayed = service.submit_request(ctx.db, model_name, body, actor,
                                               ctx.settings.max_sample_ids, idempotency_key,
                                               data=data, subjects=subjects)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    else:
        request.app.state.notifier.notify()  # wake the embedded worker now
    response.headers["Location"] = f"/forget-requests/{created.id}"
    if not wait:
        return to_read(created, ctx.model_name)
    finished = _wait_until_finished(ctx, request, created.id, ctx.settings.wait_timeout_s)
    if finished.status in FINISHED:
        response.status_code = 200
    return to_read(finished, ctx.model_name)


def _wait_until_finished(ctx: ServiceContext, request: Request, request_id: str,
                         timeout_s: float) -> ForgetRequest:
    deadline = time.monotonic() + timeout_s
    done = request.app.state.worker_done
    while True:
        since = done.generation
        with ctx.db.session() as session:
            current = service.get_request(session, request_id)
        if current.status in FINISHED or time.monotonic() >= deadline:
            return current
        # Woken by the embedded worker at once; a worker in another process is polled.
        done.wait(since, min(0.25, max(0.0, deadline - time.monotonic())))


@router.get("/forget-requests/{request_id}", response_model=ForgetRequestRead,
            dependencies=READERS)
def read_forget_request(request_id: Annotated[str, Path(max_length=64)],
                        ctx: Annotated[ServiceContext, Depends(get_ctx)],
                        session: Annotated[Session, Depends(get_session)]) -> ForgetRequestRead:
    return to_read(service.get_request(session, request_id), ctx.model_name)


@router.get("/forget-requests", response_model=ForgetRequestList, dependencies=READERS)
def list_forget_requests(
    ctx: Annotated[ServiceContext, Depends(get_ctx)],
    session: Annotated[Session, Depends(get_session)],
    model: Annotated[str | None, Query(max_length=100,
                                       description="Only this model's requests.")] = None,
    status: Annotated[RequestStatus | None, Query()] = None,
    subject_reference: Annotated[str | None, Query(max_length=200)] = None,
    method: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> ForgetRequestList:
    before = None
    decoded = decode_cursor(cursor)
    if decoded is not None:
        try:
            before = (dt.datetime.fromisoformat(decoded[0]), str(decoded[1]))
        except (TypeError, ValueError, IndexError, KeyError):
            raise InvalidInputError("cursor is not one this service issued", "cursor") from None
    rows, last = service.list_requests(
        session, limit=limit, before=before,
        status=status.value if status else None,
        subject_reference=subject_reference, method=method, model_name=model,
    )
    next_cursor = encode_cursor([last.created_at.isoformat(), last.id]) if last else None
    return ForgetRequestList(items=[to_read(row, ctx.model_name) for row in rows],
                             next_cursor=next_cursor)


@router.get("/methods", response_model=MethodList, tags=["methods"],
            dependencies=[Depends(require(*ANY_ROLE))])
def list_methods() -> MethodList:
    return MethodList(items=[
        MethodInfo(name=m.name, description=m.description, supports_classes=m.supports_classes,
                   supports_samples=m.supports_samples, model_kinds=list(m.model_kinds),
                   params_schema=m.Params.model_json_schema(by_alias=True))
        for m in METHODS.values()
    ])
