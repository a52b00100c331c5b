"""HTTP routes for forget requests: thin wrappers over ``service`` and the worker."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from app.api.deps import ActorDep, CtxDep, PrincipalDep, SessionDep
from app.api.fields import omit_fields
from app.api.pagination import decode_time_id_cursor, encode_time_id_cursor
from app.auth.deps import ANY_ROLE, require
from app.auth.service import Role
from app.context import ServiceContext
from app.forget_requests.models import FINAL_STATUSES, ForgetRequest, RequestStatus
from app.forget_requests.service import get_request
from app.forgetting import service
from app.forgetting.schemas import (
    ForgetRequestCreate,
    ForgetRequestList,
    ForgetRequestMetrics,
    ForgetRequestRead,
    MethodInfo,
    MethodList,
    RequestLinks,
)
from app.forgetting.waiting import wait_until
from app.notifications.filing import check_callback_url
from app.notifications.service import notify_final_status
from app.registry.links import version_path
from app.subjects.resolution import prepare_subjects
from app.subjects.supersession import production_notice
from app.unlearning.catalog import METHODS

router = APIRouter(tags=["forget requests"])
OFFICERS = [Depends(require(Role.privacy_officer))]
READERS = [Depends(require(Role.privacy_officer, Role.auditor))]

FINISHED = FINAL_STATUSES


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
        queue=request.queue,
        phase=request.phase,
        acceptance=request.acceptance,
        verification=request.verification,
        progress=request.progress,
        attempts=request.attempts,
        worker_id=request.worker_id,
        heartbeat_at=request.heartbeat_at,
        created_at=request.created_at,
        started_at=request.started_at,
        finished_at=request.finished_at,
        duration_s=duration,
        callback_url=request.callback_url,
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
async def create_forget_request(
    body: ForgetRequestCreate,
    request: Request,
    response: Response,
    ctx: CtxDep,
    principal: PrincipalDep,
    wait: Annotated[bool, Query(description=(
        "Return once the request has finished (at most UNLEARN_WAIT_TIMEOUT_S). A key "
        "already holding UNLEARN_MAX_WAITS_PER_KEY waiting calls gets 202 at once."))] = False,
    idempotency_key: Annotated[str | None, Header(
        alias="Idempotency-Key", min_length=1, max_length=200,
        description="Retry-safe filing: the same key with the same body returns the "
                    "original request; with a different body, 409.")] = None,
) -> ForgetRequestRead:
    if body.callback_url is not None:
        check_callback_url(body.callback_url, ctx.settings)  # 422 naming callback_url
    model_name = body.model_name or ctx.model_name
    data = await run_in_threadpool(ctx.model_data, model_name)
    # subject_ids become training IDs and keyed hashes here; past this line the body
    # holds only the hashes (the idempotency digest included).
    body, subjects = await run_in_threadpool(prepare_subjects, ctx, model_name, body, data)
    # A coroutine, so that a waiting call holds no thread: filing and each status read
    # are short trips to the thread pool (app.forgetting.waiting).
    created, replayed = await run_in_threadpool(
        partial(service.submit_request, ctx.db, model_name, body, principal.name,
                ctx.settings.max_sample_ids, idempotency_key, settings=ctx.settings,
                data=data, subjects=subjects))
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    else:
        request.app.state.notifier.notify()  # wake the in-process executor now
    response.headers["Location"] = f"/forget-requests/{created.id}"
    if not wait or created.status in FINISHED:
        response.status_code = 200 if created.status in FINISHED and wait else 202
        return _filed(created, body, ctx)
    slots = request.app.state.wait_slots
    if not slots.try_acquire(principal.key_id):
        return _filed(created, body, ctx)  # over the per-key bound: answer as without wait
    try:
        finished = await wait_until(
            lambda: _read_request(ctx, created.id),
            lambda current: current.status in FINISHED,
            request.app.state.worker_done, ctx.settings.wait_timeout_s,
            reread_s=ctx.settings.wait_poll_s)
    finally:
        slots.release(principal.key_id)
    if finished.status in FINISHED:
        response.status_code = 200
    return _filed(finished, body, ctx)


@router.post("/forget-requests/{request_id}/cancel", response_model=ForgetRequestRead,
             dependencies=OFFICERS,
             responses={409: {"description": "The request has already finished."}})
def cancel_forget_request(request_id: Annotated[str, Path(max_length=64)],
                          request: Request,
                          ctx: CtxDep,
                          actor: ActorDep) -> ForgetRequestRead:
    """Cancel a queued or running request: it ends `cancelled` and publishes nothing (a
    running attempt stops at its next progress checkpoint). Audited."""
    cancelled = service.cancel_request(ctx.db, request_id, actor)
    request.app.state.worker_done.notify()  # waiters on this request may return
    notify_final_status(ctx, request_id)  # metrics and the completion webhook
    return to_read(cancelled, ctx.model_name)


def _read_request(ctx: ServiceContext, request_id: str) -> ForgetRequest:
    with ctx.db.session() as session:
        return get_request(session, request_id)


@router.get("/forget-requests/{request_id}", response_model=ForgetRequestRead,
            dependencies=READERS)
def read_forget_request(request_id: Annotated[str, Path(max_length=64)],
                        ctx: CtxDep,
                        session: SessionDep) -> ForgetRequestRead:
    return to_read(get_request(session, request_id), ctx.model_name)


@router.get("/forget-requests", response_model=ForgetRequestList, dependencies=READERS)
def list_forget_requests(
    ctx: CtxDep,
    session: SessionDep,
    model: Annotated[str | None, Query(max_length=100,
                                       description="Only this model's requests.")] = None,
    status: Annotated[RequestStatus | None, Query()] = None,
    subject_reference: Annotated[str | None, Query(max_length=200)] = None,
    method: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    include: Annotated[list[Literal["metrics"]], Query(
        description="Add each request's before/after metrics (repeatable); without it the "
                    "items are summaries and GET /forget-requests/{id} has them.")] = [],  # noqa: B006
) -> JSONResponse:  # a ForgetRequestList (response_model) less the omitted fields
    """Requests, newest first, as summaries (no metrics unless ``?include=metrics``)."""
    before = decode_time_id_cursor(cursor)
    rows, last = service.list_requests(
        session, limit=limit, before=before,
        status=status.value if status else None,
        subject_reference=subject_reference, method=method, model_name=model,
    )
    next_cursor = encode_time_id_cursor(last.created_at, last.id) if last else None
    listed = ForgetRequestList(items=[to_read(row, ctx.model_name) for row in rows],
                               next_cursor=next_cursor)
    return omit_fields(listed, {"metrics"} - set(include))


@router.get("/methods", response_model=MethodList, tags=["methods"],
            dependencies=[Depends(require(*ANY_ROLE))])
def list_methods() -> MethodList:
    return MethodList(items=[
        MethodInfo(name=m.name, description=m.description, supports_classes=m.supports_classes,
                   supports_samples=m.supports_samples, model_kinds=list(m.model_kinds),
                   params_schema=m.Params.model_json_schema(by_alias=True))
        for m in METHODS.values()
    ])


def _filed(request: ForgetRequest, body: ForgetRequestCreate,
           ctx: ServiceContext) -> ForgetRequestRead:
    """The filing answer: the request, saying whether it starts from the production
    version because the body named no model_version."""
    filed = to_read(request, ctx.model_name)
    filed.source_version_was_default = body.model_version is None
    return filed
