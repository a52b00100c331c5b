"""What every console page shares: templates, the route classes that turn errors into
pages (or the API's error shape for data calls), the page context, the chosen model."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    JSONResponse,
    RedirectResponse,
    Response,
)
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from app.api.errors import error_body
from app.api.pagination import (
    DB_INT_MAX,
)
from app.console import auth
from app.console.auth import LoginRequired
from app.context import ServiceContext
from app.core.errors import NotFoundError, ServiceError
from app.forget_requests.models import FINAL_STATUSES
from app.registry import service as registry_service
from app.registry.models import RegisteredModel

logger = logging.getLogger("unlearn.console")

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
FINISHED = FINAL_STATUSES
PAGE_SIZE = 25
VersionNumber = Annotated[int, PathParam(ge=1, le=DB_INT_MAX)]
PNG = "image/png"
IDEMPOTENCY_PREFIX = "console-"

# Pages load only this origin's scripts, styles and images: no inline script can run.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class PageRoute(APIRoute):
    """Turns the console's exceptions into pages. Data calls (plots, JSON) leave them to
    the app's error handlers (app/api/errors.py): the API's one error shape and codes."""

    html = True

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()
        html = self.html

        async def route(request: Request) -> Response:
            try:
                response = await handler(request)
            except LoginRequired:
                if not html:
                    response = JSONResponse(
                        error_body("unauthenticated", "log in to the console first"),
                        status_code=401)
                else:
                    target = request.url.path + (f"?{request.url.query}"
                                                 if request.url.query else "")
                    return RedirectResponse(f"/console/login?next={quote_all(target)}",
                                            status_code=303)
            except ServiceError as error:
                if not html:
                    raise
                response = error_page(request, error.status_code, error.message, error.field)
            except RequestValidationError as error:
                if not html:
                    raise
                first = error.errors()[0] if error.errors() else {}
                location = [str(p) for p in first.get("loc", ()) if p not in ("query", "path")]
                field = ".".join(location) or None
                response = error_page(request, 422, f"{field}: {first.get('msg', 'invalid')}",
                                       field)
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return route


class DataRoute(PageRoute):
    html = False


def quote_all(text: str) -> str:
    return quote(text, safe="")


PAGE_TITLES = {403: "Not allowed", 404: "Not found", 409: "Conflict", 410: "Gone",
               413: "Too large", 422: "Invalid input", 503: "Unavailable"}


def error_page(request: Request, status: int, message: str,
                field: str | None = None) -> Response:
    return templates.TemplateResponse(
        request, "error.html",
        page_context(request, title=PAGE_TITLES.get(status, "Error"), message=message,
                 field=field, status=status),
        status_code=status,
    )


def page_context(request: Request, **values: Any) -> dict:
    session = auth.current_session(request)
    principal = session.principal if session else None
    choices: list[str] = []
    if principal is not None:
        with service_context(request).db.session() as db_session:
            choices = [m.name for m in registry_service.list_registered_models(db_session)]
    return {
        "principal": principal,
        "csrf_token": session.csrf_token if session else "",
        "may": (lambda page: bool(principal and auth.may(request, principal, page))),
        "model_choices": choices,
        "current_model": model_name_of(request),
        **values,
    }


MODEL_COOKIE = "unlearn_console_model"


def model_name_of(request: Request) -> str:
    """The model the console shows: ``?model=`` (remembered in a cookie by the models
    page), else the one remembered, else the service's default model."""
    ctx = service_context(request)
    chosen = request.query_params.get("model") or request.cookies.get(MODEL_COOKIE)
    if not chosen:
        return ctx.model_name
    with ctx.db.session() as session:
        if session.get(RegisteredModel, chosen) is None:
            if request.query_params.get("model"):
                raise NotFoundError(f"model {chosen!r} is not registered", "model")
            return ctx.model_name  # a remembered model that no longer exists
    return chosen


def service_context(request: Request) -> ServiceContext:
    return request.app.state.ctx


def actor_of(session: auth.Session) -> str:
    # As in the API, the audit log's actor is the key's name.
    return session.principal.name


def page_router() -> APIRouter:
    """A router for one page's HTML routes (errors become the error page)."""
    return APIRouter(prefix="/console", route_class=PageRoute, include_in_schema=False)


def data_router() -> APIRouter:
    """A router for one page's data calls (plots, JSON; errors in the API's shape)."""
    return APIRouter(prefix="/console", route_class=DataRoute, include_in_schema=False)



def all_versions(model_name: str, session) -> list:
    rows, after = [], None
    while True:
        page, after = registry_service.list_versions(session, model_name, 500, after)
        rows.extend(page)
        if after is None:
            return rows



def png_response(content: bytes) -> Response:
    # Plots are immutable for their URL's key; the browser may keep them privately.
    return Response(content, media_type=PNG, headers={"Cache-Control": "private, max-age=3600"})

