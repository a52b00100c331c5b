"""The audit log: filtered pages, the chain's verification, the export."""

from __future__ import annotations

import dataclasses
from typing import Annotated
from urllib.parse import urlencode

from fastapi import Depends, Query, Request
from fastapi.responses import (
    HTMLResponse,
    Response,
    StreamingResponse,
)
from pydantic import BaseModel

from app.api.pagination import (
    DB_INT_MAX,
    decode_id_cursor,
    encode_cursor,
)
from app.audit import export
from app.audit import service as audit_service
from app.audit.export import ExportFormat
from app.audit.service import AuditAction, AuditFilter
from app.console import auth, views
from app.console.web import (
    PAGE_SIZE,
    data_router,
    logger,
    page_context,
    page_router,
    service_context,
    templates,
)
from app.core.errors import InvalidInputError

pages = page_router()
data = data_router()


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
def audit_page(request: Request,
               access: Annotated[auth.Session, Depends(auth.page("audit"))],
               action: AuditQuery = None, actor: AuditQuery = None,
               subject_reference: AuditQuery = None, model_version: AuditQuery = None,
               forget_request_id: AuditQuery = None, since: AuditQuery = None,
               until: AuditQuery = None, cursor: AuditQuery = None) -> Response:
    filters = _audit_filter(action, actor, subject_reference, model_version, forget_request_id,
                            since, until)
    before_id = decode_id_cursor(cursor or None)
    ctx = service_context(request)
    with ctx.db.session() as session:
        rows, next_id = audit_service.query(session, filters, PAGE_SIZE, before_id)
        chain = _chain_status(session)
    values = {"action": action or "", "actor": actor or "",
              "subject_reference": subject_reference or "", "model_version": model_version or "",
              "forget_request_id": forget_request_id or "", "since": since or "",
              "until": until or ""}
    query = urlencode({k: v for k, v in values.items() if v})
    return templates.TemplateResponse(request, "audit.html", page_context(
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
    elif dataclasses.is_dataclass(result) and not isinstance(result, type):
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
def audit_export(request: Request,
                 access: Annotated[auth.Session, Depends(auth.page("audit_export"))],
                 format: Annotated[ExportFormat, Query()] = ExportFormat.jsonl,
                 action: AuditQuery = None, actor: AuditQuery = None,
                 subject_reference: AuditQuery = None, model_version: AuditQuery = None,
                 forget_request_id: AuditQuery = None, since: AuditQuery = None,
                 until: AuditQuery = None) -> StreamingResponse:
    """The API's export (app/audit/export.py: chain order, hashes, the CSV formula guard),
    narrowed to the page's filters."""
    filters = _audit_filter(action, actor, subject_reference, model_version, forget_request_id,
                            since, until)
    media = export.JSONL_TYPE if format is ExportFormat.jsonl else export.CSV_TYPE
    return StreamingResponse(
        export.stream(service_context(request).db, format, filters=filters), media_type=media,
        headers={"Content-Disposition": f'attachment; filename="audit-log.{format.value}"'})
