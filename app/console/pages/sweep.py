"""The α sweep page."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.responses import (
    HTMLResponse,
    Response,
)

from app.api.pagination import (
    DB_INT_MAX,
)
from app.console import auth
from app.console.sweep import DEFAULT_ALPHAS, alpha_sweep, parse_alphas
from app.console.web import (
    all_versions,
    data_router,
    model_name_of,
    page_context,
    page_router,
    quote_all,
    service_context,
    templates,
)
from app.registry import service as registry_service

pages = page_router()
data = data_router()


@pages.get("/sweep", response_class=HTMLResponse)
def sweep_page(request: Request,
               access: Annotated[auth.Session, Depends(auth.page("sweep"))],
               version: Annotated[int | None, Query(ge=1, le=DB_INT_MAX)] = None,
               digit: Annotated[int | None, Query(alias="class")] = None,
               alphas: Annotated[str | None, Query(max_length=300)] = None) -> Response:
    ctx = service_context(request)
    with ctx.db.session() as session:
        versions = all_versions(model_name_of(request), session)
        production = registry_service.production_version(session, model_name_of(request))
        chosen = registry_service.get_version(session, model_name_of(request), version) \
            if version is not None else None
    parsed = parse_alphas(alphas)
    rows = None
    if chosen is not None and digit is not None:
        rows = alpha_sweep(ctx, chosen, digit, parsed)
    return templates.TemplateResponse(request, "sweep.html", page_context(
        request, versions=versions, version=version or production, digit=digit,
        alphas_text=", ".join(f"{a:g}" for a in parsed), rows=rows,
        default_alphas=", ".join(f"{a:g}" for a in DEFAULT_ALPHAS),
        plot_query=f"alphas={quote_all(','.join(f'{a:g}' for a in parsed))}"))
