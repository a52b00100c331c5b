"""The models page (lineage tree) and a version's page."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import (
    HTMLResponse,
    Response,
)

from app.console import auth, views
from app.console.state import console_state
from app.console.web import (
    MODEL_COOKIE,
    VersionNumber,
    all_versions,
    data_router,
    model_name_of,
    page_context,
    page_router,
    service_context,
    templates,
)
from app.registry import service as registry_service
from app.subjects.supersession import version_state, version_states

pages = page_router()
data = data_router()


@pages.get("/models", response_class=HTMLResponse)
def models_page(request: Request,
                access: Annotated[auth.Session, Depends(auth.page("models"))]) -> Response:
    ctx = service_context(request)
    model_name = model_name_of(request)
    with ctx.db.session() as session:
        rows = all_versions(model_name, session)
        registered = registry_service.get_registered_model(session, model_name, "model")
        production = registered.production_version
        dataset, architecture = registered.dataset_name, registered.architecture
        states = version_states(session, model_name)  # issue 10: superseded / purged
    response = templates.TemplateResponse(request, "models.html", page_context(
        request, tree=views.version_tree(rows, production), count=len(rows),
        production=production, model_name=model_name, dataset=dataset,
        architecture=architecture, states=states))
    if request.query_params.get("model"):  # the picker's choice holds for the other pages
        response.set_cookie(MODEL_COOKIE, model_name, path=auth.COOKIE_PATH, httponly=True,
                            samesite="strict",
                            secure=console_state(request).settings.console_secure_cookie)
    return response


@pages.get("/models/{version}", response_class=HTMLResponse)
def version_page(request: Request,
                 access: Annotated[auth.Session, Depends(auth.page("version"))],
                 version: VersionNumber) -> Response:
    ctx = service_context(request)
    with ctx.db.session() as session:
        model_name = model_name_of(request)
        row = registry_service.get_version(session, model_name, version)
        production = registry_service.production_version(session, model_name)
        children = [r for r in all_versions(model_name, session) if r.parent_version == version]
        state = version_state(session, row)  # issue 10: superseded / purged
    test = (row.metrics or {}).get("test")
    return templates.TemplateResponse(request, "version.html", page_context(
        request, row=row, test=test, is_production=row.version == production,
        children=children, state=state))
