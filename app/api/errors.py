"""One JSON error shape for every failure: ``{"error": {"code", "message", "field",
"details"}}``. Validation errors name the offending field (``params.alpha``,
``instances[3]``), and nothing unexpected leaks as a bare 500 page."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core.errors import ServiceError
from app.db.retry import TRANSIENT_ERRORS, is_transient

DATABASE_RETRY_AFTER_S = 5

logger = logging.getLogger("unlearn.api")


class ErrorDetail(BaseModel):
    field: str
    message: str


class ErrorInfo(BaseModel):
    code: str
    message: str
    field: str | None = None
    details: list[ErrorDetail] | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo


# Declared on every route, so that the OpenAPI schema describes the error bodies too.
ERROR_RESPONSES: dict[int | str, dict] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in (
        (400, "Malformed request"), (401, "No valid API key"),
        (403, "The key lacks the role"), (404, "Not found"), (409, "Conflict"),
        (413, "Too large"), (422, "Invalid input (the field is named)"),
        (429, "Too many failed authentications (see Retry-After)"),
        (503, "Unavailable (e.g. a corrupted model file)"),
    )
}


def error_body(code: str, message: str, field: str | None = None,
               details: list | None = None) -> dict:
    body: dict = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    if details:
        body["details"] = details
    return {"error": body}


def _field_name(location: tuple) -> str:
    parts = [str(p) for p in location if p not in ("body", "query", "path", "header")]
    name = ""
    for part in parts:
        name += f"[{part}]" if part.isdigit() else (f".{part}" if name else part)
    return name or "body"


async def _json_error_message(request: Request, item: dict) -> str:
    """'the body is not valid JSON: <reason> at line L column C' (not 'field "[15]"')."""
    reason = (item.get("ctx") or {}).get("error") or item.get("msg", "invalid JSON")
    location = tuple(item.get("loc", ()))
    position = location[1] if len(location) > 1 and isinstance(location[1], int) else None
    if position is None:
        return f"the body is not valid JSON: {reason}"
    body = await request.body()
    line = body.count(b"\n", 0, position) + 1
    column = position - body.rfind(b"\n", 0, position)
    return f"the body is not valid JSON: {reason} at line {line} column {column}"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, error: ServiceError) -> JSONResponse:
        details = None
        if error.status_code == 422:  # every validation error carries details
            details = [{"field": error.field or "body", "message": error.message}]
        return JSONResponse(error_body(error.code, error.message, error.field, details),
                            status_code=error.status_code,
                            headers=getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        details = []
        for item in error.errors():
            if item.get("type") == "json_invalid":  # loc is ("body", position)
                message = await _json_error_message(request, item)
                return JSONResponse(error_body("validation_error", message, "body",
                                               [{"field": "body", "message": message}]),
                                    status_code=422)
            field = _field_name(tuple(item.get("loc", ())))
            details.append({"field": field, "message": item.get("msg", "invalid")})
        first = details[0] if details else {"field": "body", "message": "invalid request"}
        return JSONResponse(
            error_body("validation_error", f"{first['field']}: {first['message']}",
                       first["field"], details),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            error.status_code, "http_error")
        return JSONResponse(error_body(code, str(error.detail)), status_code=error.status_code,
                            headers=getattr(error, "headers", None))

    @app.exception_handler(DataError)
    async def _data_error(request: Request, error: DataError) -> JSONResponse:
        # A value the database cannot store or compare (a number out of its range, a
        # character it refuses) that no route check caught: the caller's input, not ours.
        logger.warning("database refused a value on %s %s: %s", request.method,
                       request.url.path, error.orig)
        return JSONResponse(error_body("invalid_input", "a value in the request is out of "
                                       "range or not storable"), status_code=422)

    async def _database_unavailable(request: Request, error: Exception) -> JSONResponse:
        # The database is unreachable (refused, dropped, pool exhausted): the service is
        # unavailable for now, not broken; clients should retry.
        logger.warning("database unavailable on %s %s: %s", request.method,
                       request.url.path, error)
        return JSONResponse(
            error_body("database_unavailable",
                       "the database is unreachable; retry in a few seconds"),
            status_code=503, headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)})

    for transient in TRANSIENT_ERRORS:
        app.add_exception_handler(transient, _database_unavailable)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        if is_transient(error):  # e.g. a DBAPIError whose connection was invalidated
            return await _database_unavailable(request, error)
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal_error", "internal server error"),
                            status_code=500)
