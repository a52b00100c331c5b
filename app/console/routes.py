"""The console's HTTP layer: pages (HTML), plots (PNG) and the few JSON calls the pages
make. Thin, like the API's routes: every read and write goes through the same service
functions, with the console user as the actor."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, FastAPI, Path as PathParam, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field, ValidationError

from app.api.pagination import (
    DB_INT_MAX,
    decode_id_cursor,
    decode_time_id_cursor,
    encode_cursor,
)
from app.audit import service as audit_service
from app.audit.service import AuditAction, AuditFilter
from app.auth.throttle import TooManyFailuresError
from app.certificates import service as certificate_service
from app.certificates.schemas import ErasureCertificate
from app.console import auth, plots, views
from app.console.auth import Forbidden, LoginRequired
from app.console.settings import ConsoleSettings
from app.console.state import console_state
from app.console.sweep import DEFAULT_ALPHAS, alpha_sweep, parse_alphas
from app.context import ServiceContext
from app.core.errors import InvalidInputError, NotFoundError, ServiceError
from app.forgetting import service as forgetting_service
from app.forgetting.models import FINAL_STATUSES, ForgetRequest, RequestStatus
from app.forgetting.schemas import ForgetRequestCreate
from app.prediction import service as prediction_service
from app.prediction.schemas import Pixel
from app.registry import service as registry_service
from app.registry.models import RegisteredModel
from app.subjects.supersession import version_state, version_states

logger = logging.getLogger("unlearn.console")

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
FINISHED = FINAL_STATUSES
PAGE_SIZE = 25
VersionNumber = Annotated[int, PathParam(ge=1, le=DB_INT_MAX)]
PNG = "image/png"

# Pages load only this origin's scripts, styles and images: no inline script can run.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class _ConsoleRoute(APIRoute):
    """Turns the console's exceptions into pages (or plain answers for data calls)."""

    html = True

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()
        html = self.html

        async def route(request: Request) -> Response:
            try:
                response = await handler(request)
            except LoginRequired:
                if not html:
                    return PlainTextResponse("log in first", status_code=401)
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/console/login?next={_quote(target)}", status_code=303)
            except Forbidden as error:
                response = _error(request, html, 403, "Not allowed", error.message)
            except ServiceError as error:
                message = error.message
                response = _error(request, html, error.status_code, _title(error.status_code),
                                  message, error.field)
            except RequestValidationError as error:
                first = error.errors()[0] if error.errors() else {}
                location = [str(p) for p in first.get("loc", ()) if p not in ("query", "path")]
                field = ".".join(location) or None
                response = _error(request, html, 422, "Invalid input",
                                  f"{field}: {first.get('msg', 'invalid')}", field)
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return route


class _DataRoute(_ConsoleRoute):
    html = False


def _quote(text: str) -> str:
    return quote(text, safe="")


def _title(status: int) -> str:
    return {404: "Not found", 409: "Conflict", 413: "Too large", 422: "Invalid input",
            503: "Unavailable"}.get(status, "Error")


def _error(request: Request, html: bool, status: int, title: str, message: str,
           field: str | None = None) -> Response:
    if not html:  # the API's error shape
        code = {403: "forbidden", 404: "not_found", 409: "conflict", 413: "payload_too_large",
                422: "validation_error", 503: "unavailable"}.get(status, "error")
        return JSONResponse({"error": {"code": code, "message": message, "field": field}},
                            status_code=status)
    return templates.TemplateResponse(
        request, "error.html",
        _context(request, title=title, message=message, field=field, status=status),
        status_code=status,
    )


def _context(request: Request, **values: Any) -> dict:
    session = auth.current_session(request)
    principal = session.principal if session else None
    choices: list[str] = []
    if principal is not None:
        with _ctx(request).db.session() as db_session:
            choices = [m.name for m in registry_service.list_registered_models(db_session)]
    return {
        "principal": principal,
        "csrf_token": session.csrf_token if session else "",
        "may": (lambda page: bool(principal and principal.may(page))),
        "model_choices": choices,
        "current_model": _model_name(request),
        **values,
    }


MODEL_COOKIE = "unlearn_console_model"


def _model_name(request: Request) -> str:
    """The model the console shows: ``?model=`` (remembered in a cookie by the models
    page), else the one remembered, else the service's default model."""
    ctx = _ctx(request)
    chosen = request.query_params.get("model") or request.cookies.get(MODEL_COOKIE)
    if not chosen:
        return ctx.model_name
    with ctx.db.session() as session:
        if session.get(RegisteredModel, chosen) is None:
            if request.query_params.get("model"):
                raise NotFoundError(f"model {chosen!r} is not registered", "model")
            return ctx.model_name  # a remembered model that no longer exists
    return chosen


def _ctx(request: Request) -> ServiceContext:
    return request.app.state.ctx


def _actor(session: auth.Session) -> str:
    # As in the API, the audit log's actor is the key's name.
    return session.principal.name


pages = APIRouter(prefix="/console", route_class=_ConsoleRoute, include_in_schema=False)
data = APIRouter(prefix="/console", route_class=_DataRoute, include_in_schema=False)


# ---------------------------------------------------------------- login and logout

@pages.get("/", response_class=HTMLResponse)
def home(request: Request) -> Response:
    session = auth.require(request, "models")
    for page, path in (("models", "/console/models"), ("requests", "/console/forget-requests"),
                       ("audit", "/console/audit"), ("try", "/console/try")):
        if session.principal.may(page):
            return RedirectResponse(path, status_code=303)
    raise Forbidden("your key holds no role that the console shows")


@pages.get("/login", response_class=HTMLResponse)
def login_form(request: Request,
               next: Annotated[str | None, Query(max_length=500)] = None) -> Response:
    return _login_page(request, next)


def _login_page(request: Request, next: str | None, error: str | None = None,
                status_code: int = 200) -> Response:
    # Not a route: the error text and status come from the login handler only, never
    # from the query string (a crafted link could otherwise put any text on the page).
    token = auth.new_login_token()
    response = templates.TemplateResponse(
        request, "login.html",
        _context(request, login_token=token, next=auth.safe_next(next), error=error),
        status_code=status_code,
    )
    _set_cookie(request, response, auth.LOGIN_COOKIE, token, max_age=3600)
    return response


@pages.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    form = await request.form()
    auth.check_same_origin(request)
    next_path = auth.safe_next(str(form.get("next") or ""))
    expected = request.cookies.get(auth.LOGIN_COOKIE)
    submitted = str(form.get("login_token") or "")
    if not expected or not auth.tokens_match(submitted, expected):
        return _login_page(request, next_path, "The login form expired; please try again.",
                           403)
    key = str(form.get("api_key") or "").strip()
    try:
        principal = await run_in_threadpool(auth.authenticate_key, request, key, True)
    except TooManyFailuresError as error:
        page = _login_page(request, next_path, "Too many failed logins from here; try again "
                           f"in {error.headers['Retry-After']} s.", 429)
        page.headers.update(error.headers)
        return page
    if principal is None:
        return _login_page(request, next_path, "That key does not open the console.", 401)
    response = RedirectResponse(next_path, status_code=303)
    _set_cookie(request, response, auth.SESSION_COOKIE, auth.new_session_cookie(request, key),
                max_age=int(console_state(request).settings.console_session_hours * 3600))
    response.delete_cookie(auth.LOGIN_COOKIE, path=auth.COOKIE_PATH)
    return response


@pages.post("/logout")
async def logout(request: Request) -> Response:
    form = await request.form()
    session = auth.current_session(request)
    if session is not None:
        auth.check_csrf(request, session, str(form.get("csrf_token") or ""))
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE, path=auth.COOKIE_PATH)
    return response


def _set_cookie(request: Request, response: Response, name: str, value: str,
                max_age: int) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path=auth.COOKIE_PATH, httponly=True, samesite="strict",
        secure=console_state(request).settings.console_secure_cookie,
    )


# ---------------------------------------------------------------- models and versions

def _all_versions(model_name: str, session) -> list:
    rows, after = [], None
    while True:
        page, after = registry_service.list_versions(session, model_name, 500, after)
        rows.extend(page)
        if after is None:
            return rows


@pages.get("/models", response_class=HTMLResponse)
def models_page(request: Request) -> Response:
    auth.require(request, "models")
    ctx = _ctx(request)
    model_name = _model_name(request)
    with ctx.db.session() as session:
        rows = _all_versions(model_name, session)
        registered = registry_service.get_registered_model(session, model_name, "model")
        production = registered.production_version
        dataset, architecture = registered.dataset_name, registered.architecture
        states = version_states(session, model_name)  # issue 10: superseded / purged
    response = templates.TemplateResponse(request, "models.html", _context(
        request, tree=views.version_tree(rows, production), count=len(rows),
        production=production, model_name=model_name, dataset=dataset,
        architecture=architecture, states=states))
    if request.query_params.get("model"):  # the picker's choice holds for the other pages
        response.set_cookie(MODEL_COOKIE, model_name, path=auth.COOKIE_PATH, httponly=True,
                            samesite="strict",
                            secure=console_state(request).settings.console_secure_cookie)
    return response


@pages.get("/models/{version}", response_class=HTMLResponse)
def version_page(request: Request, version: VersionNumber) -> Response:
    auth.require(request, "version")
    ctx = _ctx(request)
    with ctx.db.session() as session:
        model_name = _model_name(request)
        row = registry_service.get_version(session, model_name, version)
        production = registry_service.production_version(session, model_name)
        children = [r for r in _all_versions(model_name, session) if r.parent_version == version]
        state = version_state(session, row)  # issue 10: superseded / purged
    test = (row.metrics or {}).get("test")
    return templates.TemplateResponse(request, "version.html", _context(
        request, row=row, test=test, is_production=row.version == production,
        children=children, state=state))


# ---------------------------------------------------------------- forget requests

@pages.get("/forget-requests", response_class=HTMLResponse)
def requests_page(
    request: Request,
    status: Annotated[str | None, Query(max_length=16)] = None,
    subject_reference: Annotated[str | None, Query(max_length=200)] = None,
    method: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[str | None, Query(max_length=40)] = None,
    until: Annotated[str | None, Query(max_length=40)] = None,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Response:
    auth.require(request, "requests")
    ctx = _ctx(request)
    status = status or None
    if status is not None and status not in {s.value for s in RequestStatus}:
        raise InvalidInputError(f"status: {status!r} is not one of "
                                f"{', '.join(s.value for s in RequestStatus)}", "status")
    before = _decode_request_cursor(cursor)
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
        next_cursor = encode_cursor([last.created_at.isoformat(), last.id])
    return templates.TemplateResponse(request, "requests.html", _context(
        request, rows=[views.request_summary(row) for row in rows], filters=filters,
        statuses=[s.value for s in RequestStatus], methods=sorted(views.METHODS),
        next_cursor=next_cursor))


def _decode_request_cursor(cursor: str | None):
    return decode_time_id_cursor(cursor or None)


def _form_page(request: Request, values: dict, error: str | None = None,
               error_field: str | None = None, status_code: int = 200) -> Response:
    ctx = _ctx(request)
    with ctx.db.session() as session:
        versions = _all_versions(_model_name(request), session)
        production = registry_service.production_version(session, _model_name(request))
    return templates.TemplateResponse(request, "request_form.html", _context(
        request, methods=views.method_forms(), versions=versions, production=production,
        values=values, error=error, error_field=error_field), status_code=status_code)


@pages.get("/forget-requests/new", response_class=HTMLResponse)
def new_request_page(request: Request) -> Response:
    session = auth.require(request, "file_request")
    return _form_page(request, {"requested_by": session.principal.name,
                                "method": next(iter(views.METHODS), "")})


@pages.post("/forget-requests", response_class=HTMLResponse)
async def file_request(request: Request) -> Response:
    session = auth.require(request, "file_request")
    form = await request.form()
    auth.check_csrf(request, session, str(form.get("csrf_token") or ""))
    values = {key: form.getlist(key) if key == "classes" else str(value)
              for key, value in form.multi_items()}
    values["classes"] = form.getlist("classes")
    try:
        body = _request_body(form)
        created = await run_in_threadpool(_file, request, body, _actor(session))
    except ServiceError as error:
        return _form_page(request, values, error.message, error.field, error.status_code)
    request.app.state.notifier.notify()  # wake the in-process executor now
    return RedirectResponse(f"/console/forget-requests/{created.id}", status_code=303)


def _request_body(form) -> ForgetRequestCreate:
    """The form as the API's request body; each bad field is reported by name."""
    method_name = str(form.get("method") or "")
    classes = []
    for position, value in enumerate(form.getlist("classes")):
        try:
            classes.append(int(value))
        except ValueError:
            raise InvalidInputError(f"classes[{position}]: {value!r} is not a class",
                                    f"classes[{position}]") from None
    sample_ids = []
    for position, token in enumerate(str(form.get("sample_ids") or "").replace(",", " ").split()):
        try:
            sample_ids.append(int(token))
        except ValueError:
            raise InvalidInputError(f"sample_ids: {token!r} (item {position + 1}) is not an "
                                    f"integer ID", "sample_ids") from None
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


def _file(request: Request, body: ForgetRequestCreate, actor: str) -> ForgetRequest:
    ctx = _ctx(request)
    with ctx.db.session() as session:
        model_name = body.model_name or _model_name(request)
        return forgetting_service.file_request(
            session, model_name, body, actor, ctx.settings.max_sample_ids,
            settings=ctx.settings, data=ctx.model_data(model_name))


@pages.get("/forget-requests/{request_id}", response_class=HTMLResponse)
def request_page(request: Request, request_id: str) -> Response:
    auth.require(request, "requests")
    ctx = _ctx(request)
    with ctx.db.session() as session:
        row = forgetting_service.get_request(session, request_id[:64])
        entries, _ = audit_service.query(session, AuditFilter(forget_request_id=row.id), 100)
    metrics = row.metrics or {}
    before, after = metrics.get("before"), metrics.get("after")
    return templates.TemplateResponse(request, "request.html", _context(
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
            session.principal.may("certificate"):
        return f"/console/forget-requests/{row.id}/certificate"
    return None


@data.get("/forget-requests/{request_id}/certificate")
def request_certificate(request: Request, request_id: str) -> JSONResponse:
    """The same signed certificate as the API's, for the logged-in console user."""
    auth.require(request, "certificate")
    ctx = _ctx(request)
    with ctx.db.session() as session:
        certificate = certificate_service.issue_certificate(ctx, session, request_id[:64])
    body = ErasureCertificate.model_validate(certificate).model_dump(mode="json")
    return JSONResponse(body, headers={
        "Content-Disposition": f'attachment; filename="erasure-certificate-{request_id[:64]}.json"'})


@data.get("/forget-requests/{request_id}/status")
def request_status(request: Request, request_id: str) -> JSONResponse:
    auth.require(request, "requests")
    ctx = _ctx(request)
    with ctx.db.session() as session:
        row = forgetting_service.get_request(session, request_id[:64])
    return JSONResponse({"status": row.status, "phase": row.phase,
                         "progress": row.progress, "error": row.error,
                         "result_version": row.result_version,
                         "finished": row.status in FINISHED})


# ---------------------------------------------------------------- audit log

def _audit_filter(action, actor, subject_reference, model_version, forget_request_id, since,
                  until) -> AuditFilter:
    if action and action not in {a.value for a in AuditAction}:
        raise InvalidInputError(f"action: {action!r} is not an audit action", "action")
    version = None
    if model_version:
        try:
            version = int(model_version)
        except ValueError:
            raise InvalidInputError(f"model_version: {model_version!r} is not a number",
                                    "model_version") from None
        if not 1 <= version <= DB_INT_MAX:
            raise InvalidInputError(f"model_version: {model_version!r} is out of range",
                                    "model_version")
    return AuditFilter(
        since=views.parse_local_time(since, "since"), until=views.parse_local_time(until, "until"),
        action=action or None, actor=actor or None, subject_reference=subject_reference or None,
        model_version=version, forget_request_id=forget_request_id or None,
    )


AuditQuery = Annotated[str | None, Query(max_length=200)]


@pages.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, action: AuditQuery = None, actor: AuditQuery = None,
               subject_reference: AuditQuery = None, model_version: AuditQuery = None,
               forget_request_id: AuditQuery = None, since: AuditQuery = None,
               until: AuditQuery = None, cursor: AuditQuery = None) -> Response:
    auth.require(request, "audit")
    filters = _audit_filter(action, actor, subject_reference, model_version, forget_request_id,
                            since, until)
    before_id = decode_id_cursor(cursor or None)
    ctx = _ctx(request)
    with ctx.db.session() as session:
        rows, next_id = audit_service.query(session, filters, PAGE_SIZE, before_id)
        chain = _chain_status(session)
    values = {"action": action or "", "actor": actor or "",
              "subject_reference": subject_reference or "", "model_version": model_version or "",
              "forget_request_id": forget_request_id or "", "since": since or "",
              "until": until or ""}
    query = urlencode({k: v for k, v in values.items() if v})
    return templates.TemplateResponse(request, "audit.html", _context(
        request, rows=rows, values=values, actions=[a.value for a in AuditAction],
        next_cursor=encode_cursor(next_id) if next_id is not None else None,
        query=query, chain=chain))


def _chain_status(session) -> dict | None:
    """The audit chain's verification, where the service keeps a hash chain (the security
    work's ``verify_chain``); None where it does not."""
    verify = getattr(audit_service, "verify_chain", None)
    if verify is None:
        return None
    try:
        result = verify(session)
    except Exception as error:  # a failure to verify is itself worth showing
        logger.exception("audit chain verification failed")
        return {"ok": False, "message": f"verification failed: {error}"}
    if hasattr(result, "to_dict"):
        facts = result.to_dict()
    elif isinstance(result, BaseModel):
        facts = result.model_dump()
    elif dataclasses.is_dataclass(result):
        facts = dataclasses.asdict(result)
    else:
        facts = dict(result) if isinstance(result, dict) else {"ok": bool(result)}
    describe = getattr(result, "describe", None)
    return {
        "ok": bool(facts.get("intact", facts.get("ok"))),
        "count": facts.get("entries_checked", facts.get("count")),
        "head_hash": facts.get("head_hash"),
        "message": describe() if callable(describe) else (facts.get("reason")
                                                           or facts.get("message") or ""),
    }


@data.get("/audit/export")
def audit_export(request: Request, format: Annotated[str, Query(pattern="^(jsonl|csv)$")] = "jsonl",
                 action: AuditQuery = None, actor: AuditQuery = None,
                 subject_reference: AuditQuery = None, model_version: AuditQuery = None,
                 forget_request_id: AuditQuery = None, since: AuditQuery = None,
                 until: AuditQuery = None) -> StreamingResponse:
    auth.require(request, "audit")
    filters = _audit_filter(action, actor, subject_reference, model_version, forget_request_id,
                            since, until)
    ctx = _ctx(request)
    columns = ("id", "created_at", "actor", "action", "subject_reference", "forget_request_id",
               "model_name", "model_version", "details")

    def entries() -> Iterator[dict]:
        before_id = None
        while True:
            with ctx.db.session() as session:
                rows, before_id = audit_service.query(session, filters, 500, before_id)
                page = [{column: getattr(row, column) for column in columns} for row in rows]
            for item in page:
                item["created_at"] = item["created_at"].isoformat()
                yield item
            if before_id is None:
                return

    def jsonl() -> Iterator[str]:
        for item in entries():
            yield json.dumps(item, sort_keys=True) + "\n"

    def as_csv() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        for item in entries():
            item["details"] = json.dumps(item["details"], sort_keys=True)
            writer.writerow([item[column] for column in columns])
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
        yield buffer.getvalue()

    media = "application/x-ndjson" if format == "jsonl" else "text/csv"
    return StreamingResponse(jsonl() if format == "jsonl" else as_csv(), media_type=media,
                             headers={"Content-Disposition":
                                      f'attachment; filename="audit-log.{format}"'})


# ---------------------------------------------------------------- try it

@pages.get("/try", response_class=HTMLResponse)
def try_page(request: Request, left: int | None = None, right: int | None = None) -> Response:
    auth.require(request, "try")
    ctx = _ctx(request)
    with ctx.db.session() as session:
        versions = _all_versions(_model_name(request), session)
        production = registry_service.production_version(session, _model_name(request))
    numbers = [row.version for row in versions]
    # By default a parent and its child: the newest version with a parent, and that parent.
    child = next((row for row in sorted(versions, key=lambda row: row.version, reverse=True)
                  if row.parent_version in numbers), None)
    if right not in numbers:
        right = child.version if child else (numbers[-1] if numbers else None)
    if left not in numbers:
        parent = next((row.parent_version for row in versions if row.version == right), None)
        left = parent if parent in numbers else (production or (numbers[0] if numbers else None))
    return templates.TemplateResponse(request, "try.html", _context(
        request, versions=versions, left=left, right=right, production=production))


class TryRequest(BaseModel):
    versions: list[Annotated[int, Field(ge=1, le=DB_INT_MAX)]] = Field(min_length=1,
                                                                        max_length=2)
    instances: list[list[list[Pixel]]] = Field(min_length=1, max_length=1)


@data.post("/try/predict")
def try_predict(request: Request, body: TryRequest) -> JSONResponse:
    session = auth.require(request, "try")
    auth.check_csrf(request, session, request.headers.get("x-csrf-token"))
    ctx = _ctx(request)
    answers = []
    for position, number in enumerate(body.versions):
        with ctx.db.session() as db_session:
            version = registry_service.get_version(db_session, _model_name(request), number,
                                                   f"versions[{position}]")
        model = ctx.models.get(version)
        batch = prediction_service.batch_from_instances(body.instances, 1,
                                                        model.spec.image_shape)
        labels, probabilities = prediction_service.predict(model, batch, ctx.device)
        answers.append({"version": version.version, "label": labels[0],
                        "probabilities": probabilities[0],
                        "forgotten_classes": version.forgotten_classes})
    return JSONResponse({"predictions": answers})


# ---------------------------------------------------------------- alpha sweep

@pages.get("/sweep", response_class=HTMLResponse)
def sweep_page(request: Request, version: Annotated[int | None, Query(ge=1, le=DB_INT_MAX)] = None,
               digit: Annotated[int | None, Query(alias="class")] = None,
               alphas: Annotated[str | None, Query(max_length=300)] = None) -> Response:
    auth.require(request, "sweep")
    ctx = _ctx(request)
    with ctx.db.session() as session:
        versions = _all_versions(_model_name(request), session)
        production = registry_service.production_version(session, _model_name(request))
        chosen = registry_service.get_version(session, _model_name(request), version) \
            if version is not None else None
    parsed = parse_alphas(alphas)
    rows = None
    if chosen is not None and digit is not None:
        rows = alpha_sweep(ctx, chosen, digit, parsed)
    return templates.TemplateResponse(request, "sweep.html", _context(
        request, versions=versions, version=version or production, digit=digit,
        alphas_text=", ".join(f"{a:g}" for a in parsed), rows=rows,
        default_alphas=", ".join(f"{a:g}" for a in DEFAULT_ALPHAS),
        plot_query=f"alphas={_quote(','.join(f'{a:g}' for a in parsed))}"))


# ---------------------------------------------------------------- plots

def _png_response(content: bytes) -> Response:
    # Plots are immutable for their URL's key; the browser may keep them privately.
    return Response(content, media_type=PNG, headers={"Cache-Control": "private, max-age=3600"})


@data.get("/plots/versions/{version}/{kind}.png")
def version_plot(request: Request, version: VersionNumber, kind: str) -> Response:
    auth.require(request, "version")
    ctx = _ctx(request)
    with ctx.db.session() as session:
        row = registry_service.get_version(session, _model_name(request), version)
    test = (row.metrics or {}).get("test")
    if test is None or kind not in ("per-class", "confusion"):
        raise NotFoundError(f"no {kind} plot for version {version}")
    key = f"version-{row.version}-{row.artifact_sha256[:24]}-{kind}"
    if kind == "per-class":
        render = lambda: plots.per_class_bars(  # noqa: E731
            {f"v{version}": test["per_class_accuracy"]},
            f"Version {version}: per-class test accuracy", row.forgotten_classes)
    else:
        render = lambda: plots.confusion_heatmap(  # noqa: E731
            test["confusion_matrix"], f"Version {version}: test confusion matrix")
    return _png_response(console_state(request).plot_cache.get(key, render))


@data.get("/plots/forget-requests/{request_id}/{kind}.png")
def request_plot(request: Request, request_id: str, kind: str) -> Response:
    auth.require(request, "requests")
    ctx = _ctx(request)
    with ctx.db.session() as session:
        row = forgetting_service.get_request(session, request_id[:64])
    metrics = row.metrics or {}
    # Unverified requests have results too: the console shows them for inspection.
    if row.status not in (RequestStatus.completed.value, RequestStatus.unverified.value) \
            or not metrics.get("after"):
        raise NotFoundError(f"forget request {row.id} has no results to plot yet")
    before, after = metrics["before"], metrics["after"]
    source, result = f"v{row.source_version}", f"v{row.result_version}"
    if kind == "per-class":
        render = lambda: plots.per_class_bars(  # noqa: E731
            {f"before ({source})": views.test_per_class(before),
             f"after ({result})": views.test_per_class(after)},
            "Per-class test accuracy before and after", row.target_classes)
    elif kind in ("confusion-before", "confusion-after"):
        which, label = (before, source) if kind == "confusion-before" else (after, result)
        matrix = views.test_confusion(which)
        if matrix is None:
            raise NotFoundError(f"forget request {row.id} has no test confusion matrix")
        render = lambda: plots.confusion_heatmap(  # noqa: E731
            matrix, f"{kind.split('-')[1].capitalize()} ({label}): test confusion")
    else:
        raise NotFoundError(f"no {kind} plot for a forget request")
    key = f"request-{row.id}-{kind}"
    return _png_response(console_state(request).plot_cache.get(key, render))


@data.get("/plots/sweep/{version}/{digit}.png")
def sweep_plot(request: Request, version: VersionNumber, digit: int,
               alphas: Annotated[str | None, Query(max_length=300)] = None) -> Response:
    auth.require(request, "sweep")
    ctx = _ctx(request)
    with ctx.db.session() as session:
        row = registry_service.get_version(session, _model_name(request), version)
    parsed = parse_alphas(alphas)
    data_key = hashlib.sha256(ctx.model_data(row.model_name).checksum.encode()).hexdigest()[:12]
    alpha_key = hashlib.sha256(repr(parsed).encode()).hexdigest()[:12]
    key = f"sweep-{row.artifact_sha256[:24]}-{data_key}-{digit}-{alpha_key}"
    render = lambda: plots.sweep_plot(alpha_sweep(ctx, row, digit, parsed), digit)  # noqa: E731
    return _png_response(console_state(request).plot_cache.get(key, render))


# ---------------------------------------------------------------- mounting

def mount_console(app: FastAPI, settings: ConsoleSettings | None = None) -> None:
    """Serve the console under /console (its routes stay out of the OpenAPI schema)."""
    app.state.console_settings = settings or ConsoleSettings()
    app.include_router(pages)
    app.include_router(data)
    app.mount("/console/static", StaticFiles(directory=str(HERE / "static")),
              name="console-static")
