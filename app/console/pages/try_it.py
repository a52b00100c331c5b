"""Try it: two versions' predictions for one image."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    Response,
)
from pydantic import BaseModel, Field

from app.api.pagination import (
    DB_INT_MAX,
)
from app.console import auth
from app.console.web import (
    actor_of,
    all_versions,
    data_router,
    model_name_of,
    page_context,
    page_router,
    service_context,
    templates,
)
from app.core.errors import ServiceError
from app.prediction import service as prediction_service
from app.prediction.predictor import forward_thread
from app.prediction.schemas import Pixel
from app.registry import service as registry_service
from app.registry.model_kinds import spec_of
from app.subjects.supersession import check_servable

pages = page_router()
data = data_router()


@pages.get("/try", response_class=HTMLResponse)
def try_page(request: Request,
             access: Annotated[auth.Session, Depends(auth.page("try"))],
             left: int | None = None, right: int | None = None) -> Response:
    ctx = service_context(request)
    with ctx.db.session() as session:
        versions = all_versions(model_name_of(request), session)
        production = registry_service.production_version(session, model_name_of(request))
    numbers = [row.version for row in versions]
    # By default a parent and its child: the newest version with a parent, and that parent.
    child = next((row for row in sorted(versions, key=lambda row: row.version, reverse=True)
                  if row.parent_version in numbers), None)
    if right not in numbers:
        right = child.version if child else (numbers[-1] if numbers else None)
    if left not in numbers:
        parent = next((row.parent_version for row in versions if row.version == right), None)
        left = parent if parent in numbers else (production or (numbers[0] if numbers else None))
    return templates.TemplateResponse(request, "try.html", page_context(
        request, versions=versions, left=left, right=right, production=production))


class TryRequest(BaseModel):
    versions: list[Annotated[int, Field(ge=1, le=DB_INT_MAX)]] = Field(min_length=1,
                                                                        max_length=2)
    instances: list[list[list[Pixel]]] = Field(min_length=1, max_length=1)


@data.post("/try/predict")
def try_predict(request: Request,
                session: Annotated[auth.Session, Depends(auth.page("try"))],
                body: TryRequest) -> JSONResponse:
    auth.check_csrf(request, session, request.headers.get("x-csrf-token"))
    ctx = service_context(request)
    answers = []
    for position, number in enumerate(body.versions):
        with ctx.db.session() as db_session:
            version = registry_service.get_version(db_session, model_name_of(request), number,
                                                   f"versions[{position}]")
        # As /predict: 410 from a purged version, 409 from a superseded one for client
        # keys (admins and auditors may still compare against it, audited).
        try:
            check_servable(ctx.db, version, session.principal.roles, actor_of(session),
                           len(body.instances))
        except ServiceError as error:
            error.field = f"versions[{position}]"
            raise
        model = ctx.models.get(version)
        batch = prediction_service.batch_from_instances(body.instances, 1,
                                                        spec_of(model).image_shape)
        # On the process's forward thread, as /predict's passes (its OpenMP team, not one
        # more for this request thread; app.prediction.predictor.forward_thread).
        labels, probabilities = forward_thread().submit(
            prediction_service.predict, model, batch, ctx.device).result()
        answers.append({"version": version.version, "label": labels[0],
                        "probabilities": probabilities[0],
                        "forgotten_classes": version.forgotten_classes})
    return JSONResponse({"predictions": answers})
