"""Forget requests: the list, the filing form, a request's page, its status
and certificate."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
)
from pydantic import ValidationError

from app.api.pagination import (
    decode_time_id_cursor,
    encode_time_id_cursor,
    safe_text,
)
from app.audit import service as audit_service
from app.audit.service import AuditFilter
from app.certificates import service as certificate_service
from app.certificates.schemas import ErasureCertificate
from app.console import auth, views
from app.console.web import (
    FINISHED,
    IDEMPOTENCY_PREFIX,
    PAGE_SIZE,
    actor_of,
    all_versions,
    data_router,
    model_name_of,
    page_context,
    page_router,
    service_context,
    templates,
)
from app.core.errors import InvalidInputError, ServiceError
from app.forget_requests.models import ForgetRequest, RequestStatus
from app.forget_requests.service import get_request
from app.forgetting import service as forgetting_service
from app.forgetting.schemas import ForgetRequestCreate
from app.registry import service as registry_service
from app.subjects.resolution import prepare_subjects

pages = page_router()
data = data_router()


@pages.get("/forget-requests", response_class=HTMLResponse)
def requests_page(
    request: Request,
    access: Annotated[auth.Session, Depends(auth.page("requests"))],
    status: Annotated[str | None, Query(max_length=16)] = None,
    subject_reference: Annotated[str | None, Query(max_length=200)] = None,
    method: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[str | None, Query(max_length=40)] = None,
    until: Annotated[str | None, Query(max_length=40)] = None,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Response:
    ctx = service_context(request)
    status = status or None
    if status is not None and status not in {s.value for s in RequestStatus}:
        raise InvalidInputError(f"status: {status!r} is not one of "
                                f"{', '.join(s.value for s in RequestStatus)}", "status")
    before = decode_time_id_cursor(cursor or None)
    with ctx.db.session() as session:
        rows, last = forgetting_service.list_requests(
            session, limit=PAGE_SIZE, before=before, status=status,
            subject_reference=subject_reference or None, method=method or None,
            created_since=views.parse_local_time(since, "since"),
            created_until=views.parse_local_time(until, "until"),
        )
    filters = {"status": status or "", "subject_reference": subject_reference or "",
               "method": method or "", "since": since or "", "until": until or ""}
    next_cursor = None
    if last is not None:
        next_cursor = encode_time_id_cursor(last.created_at, last.id)
    return templates.TemplateResponse(request, "requests.html", page_context(
        request, rows=[views.request_summary(row) for row in rows], filters=filters,
        statuses=[s.value for s in RequestStatus], methods=sorted(views.METHODS),
        next_cursor=next_cursor))


def _form_page(request: Request, values: dict, error: str | None = None,
               error_field: str | None = None, status_code: int = 200) -> Response:
    ctx = service_context(request)
    with ctx.db.session() as session:
        versions = all_versions(model_name_of(request), session)
        production = registry_service.production_version(session, model_name_of(request))
    return templates.TemplateResponse(request, "request_form.html", page_context(
        request, methods=views.method_forms(), versions=versions, production=production,
        values=values, error=error, error_field=error_field), status_code=status_code)


@pages.get("/forget-requests/new", response_class=HTMLResponse)
def new_request_page(request: Request,
                     session: Annotated[auth.Session, Depends(auth.page("file_request"))]) -> Response:
    # A fresh idempotency key per rendered form: a double submit files one request.
    return _form_page(request, {"requested_by": session.principal.name,
                                "method": next(iter(views.METHODS), ""),
                                "idempotency_key": new_idempotency_key()})


@pages.post("/forget-requests", response_class=HTMLResponse)
async def file_request(request: Request,
                       session: Annotated[auth.Session, Depends(auth.page("file_request"))]) -> Response:
    form = await request.form()
    auth.check_csrf(request, session, str(form.get("csrf_token") or ""))
    values = {key: form.getlist(key) if key == "classes" else str(value)
              for key, value in form.multi_items()}
    values["classes"] = form.getlist("classes")
    try:
        body = _request_body(form)
        idempotency_key = _idempotency_key(form)
        created, replayed = await run_in_threadpool(_file, request, body, actor_of(session),
                                                    idempotency_key)
    except ServiceError as error:
        return _form_page(request, values, error.message, error.field, error.status_code)
    if not replayed:
        request.app.state.notifier.notify()  # wake the in-process executor now
    return RedirectResponse(f"/console/forget-requests/{created.id}", status_code=303)


def new_idempotency_key() -> str:
    return IDEMPOTENCY_PREFIX + secrets.token_urlsafe(24)


def _idempotency_key(form) -> str | None:
    """The form's idempotency key (None from a form rendered before keys existed)."""
    key = str(form.get("idempotency_key") or "").strip()
    if not key:
        return None
    if len(key) > 200 or not safe_text(key, 200):
        raise InvalidInputError("idempotency_key: not a key this console issued; reload the "
                                "form", "idempotency_key")
    return key


def _request_body(form) -> ForgetRequestCreate:
    """The form as the API's request body; each bad field is reported by name."""
    method_name = str(form.get("method") or "")
    classes: list[int | str] = []
    for position, value in enumerate(form.getlist("classes")):
        try:
            classes.append(int(value))
        except ValueError:
            raise InvalidInputError(f"classes[{position}]: {value!r} is not a class",
                                    f"classes[{position}]") from None
    sample_ids: list[int | str] = []
    for position, token in enumerate(str(form.get("sample_ids") or "").replace(",", " ").split()):
        # The dataset's own IDs as typed: MNIST's are integers, an image folder's or a
        # manifest's are strings ("cats/001.png", "00123"); only a canonical decimal is
        # sent as a number, so a key like "00123" keeps its zeros.
        if not safe_text(token, 500):
            raise InvalidInputError(f"sample_ids: item {position + 1} is not a sample ID",
                                    "sample_ids")
        sample_ids.append(int(token) if token.isdigit() and str(int(token)) == token
                          else token)
    params: dict[str, Any] = {}
    method_form = next((m for m in views.method_forms() if m.name == method_name), None)
    for param in (method_form.fields if method_form else []):
        raw = form.get(f"param.{method_name}.{param.name}")
        if param.kind == "boolean":
            params[param.name] = raw is not None
            continue
        if raw is None or str(raw).strip() == "":
            continue  # the method's default applies, or its validation names the field
        raw = str(raw).strip()
        try:
            params[param.name] = (float(raw) if param.kind == "number"
                                  else int(raw) if param.kind == "integer" else raw)
        except ValueError:
            raise InvalidInputError(f"params.{param.name}: {raw!r} is not a {param.kind}",
                                    f"params.{param.name}") from None
    version = str(form.get("model_version") or "").strip()
    try:
        return ForgetRequestCreate(
            model_version=int(version) if version else None,
            classes=classes, sample_ids=sample_ids, method=method_name, params=params,
            requested_by=str(form.get("requested_by") or "").strip(),
            subject_reference=str(form.get("subject_reference") or "").strip(),
            reason=str(form.get("reason") or "").strip(),
        )
    except ValueError as error:
        if isinstance(error, ValidationError):
            first = error.errors()[0]
            field = ".".join(str(part) for part in first["loc"]) or "body"
            raise InvalidInputError(f"{field}: {first['msg']}", field) from None
        raise InvalidInputError(f"model_version: {version!r} is not a version number",
                                "model_version") from None


def _file(request: Request, body: ForgetRequestCreate, actor: str,
          idempotency_key: str | None) -> tuple[ForgetRequest, bool]:
    """File as POST /forget-requests does: the same service function, with the form's
    idempotency key; returns (request, replayed)."""
    ctx = service_context(request)
    model_name = body.model_name or model_name_of(request)
    data = ctx.model_data(model_name)
    body, subjects = prepare_subjects(ctx, model_name, body, data)
    return forgetting_service.submit_request(
        ctx.db, model_name, body, actor, ctx.settings.max_sample_ids, idempotency_key,
        settings=ctx.settings, data=data, subjects=subjects)


@pages.get("/forget-requests/{request_id}", response_class=HTMLResponse)
def request_page(request: Request,
                 access: Annotated[auth.Session, Depends(auth.page("request"))],
                 request_id: str) -> Response:
    ctx = service_context(request)
    with ctx.db.session() as session:
        row = get_request(session, request_id[:64])
        entries, _ = audit_service.query(session, AuditFilter(forget_request_id=row.id), 100)
    metrics = row.metrics or {}
    before, after = metrics.get("before"), metrics.get("after")
    return templates.TemplateResponse(request, "request.html", page_context(
        request, summary=views.request_summary(row), row=row, before=before, after=after,
        finished=row.status in FINISHED, named_sets=views.NAMED_SET_LABELS,
        per_class_before=views.test_per_class(before),
        per_class_after=views.test_per_class(after),
        confusion_before=views.test_confusion(before),
        confusion_after=views.test_confusion(after),
        extra_before=views.flatten(views.extra_figures(before)),
        extra_after=views.flatten(views.extra_figures(after)),
        entries=entries, certificate_url=_certificate_url(request, row)))


def _certificate_url(request: Request, row: ForgetRequest) -> str | None:
    """The console's link to the signed erasure certificate of a completed request."""
    session = auth.current_session(request)
    if row.status == RequestStatus.completed.value and session and \
            auth.may(request, session.principal, "certificate"):
        return f"/console/forget-requests/{row.id}/certificate"
    return None


@data.get("/forget-requests/{request_id}/certificate")
def request_certificate(request: Request,
                        access: Annotated[auth.Session, Depends(auth.page("certificate"))],
                        request_id: str) -> JSONResponse:
    """The same signed certificate as the API's, for the logged-in console user."""
    ctx = service_context(request)
    with ctx.db.session() as session:
        certificate = certificate_service.issue_certificate(ctx, session, request_id[:64])
    body = ErasureCertificate.model_validate(certificate).model_dump(mode="json")
    return JSONResponse(body, headers={
        "Content-Disposition": f'attachment; filename="erasure-certificate-{request_id[:64]}.json"'})


@data.get("/forget-requests/{request_id}/status")
def request_status(request: Request,
                   access: Annotated[auth.Session, Depends(auth.page("request"))],
                   request_id: str) -> JSONResponse:
    ctx = service_context(request)
    with ctx.db.session() as session:
        row = get_request(session, request_id[:64])
    return JSONResponse({"status": row.status, "phase": row.phase,
                         "progress": row.progress, "error": row.error,
                         "result_version": row.result_version,
                         "finished": row.status in FINISHED})
