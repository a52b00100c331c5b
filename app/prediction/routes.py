from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from app.api.deps import get_actor, get_ctx
from app.auth.deps import get_principal, require
from app.auth.service import Principal, Role
from app.audit.service import record_artifact_failure
from app.core.context import ServiceContext
from app.core.errors import CorruptArtifactError, InvalidInputError
from app.prediction import service
from app.prediction.schemas import Prediction, PredictRequest, PredictResponse
from app.registry.service import resolve_version
from app.subjects.supersession import check_servable

router = APIRouter(tags=["predictions"])


@router.post(
    "/predict",
    response_model=PredictResponse,
    # auditor: may query superseded versions (audited) for before/after comparisons.
    dependencies=[Depends(require(Role.client, Role.auditor))],
    openapi_extra={"requestBody": {
        "required": True,
        "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
    }},
)
async def predict(request: Request,
                  ctx: Annotated[ServiceContext, Depends(get_ctx)],
                  actor: Annotated[str, Depends(get_actor)],
                  principal: Annotated[Principal, Depends(get_principal)]) -> PredictResponse:
    body, instances = _parse_body(await request.body())
    return await run_in_threadpool(_predict, ctx, body, instances, actor, principal.roles)


def _parse_body(raw: bytes) -> tuple[PredictRequest, list | None]:
    """The request model, and the raw ``instances`` lists when given.

    ``instances`` dominates the cost: a 256-image batch is 200,704 JSON numbers. orjson
    parses them and NumPy checks shape, finiteness and range in C (``batch_from_instances``),
    which is about twice as fast as validating every number as a pydantic float; all the
    other fields go through ``PredictRequest`` as usual (anything but a list under
    ``instances`` too, so its errors keep the model's wording)."""
    try:
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError:
            # Not strict JSON (or not JSON at all): pydantic-core's parser also reads the
            # NaN/Infinity literals some clients send, so the error can name the image.
            body = PredictRequest.model_validate_json(raw)
            return body, body.instances
        instances = None
        if isinstance(document, dict) and isinstance(document.get("instances"), list):
            instances = document.pop("instances")
        return PredictRequest.model_validate(document), instances
    except ValidationError as error:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in error.errors()]
        ) from None


def _predict(ctx: ServiceContext, body: PredictRequest, instances: list | None,
             actor: str, roles: frozenset[str] = frozenset()) -> PredictResponse:
    if (instances is None) == (body.images is None):
        raise InvalidInputError("give exactly one of 'instances' or 'images'", "instances")
    model_name = body.model_name or ctx.model_name
    with ctx.db.session() as session:
        version = resolve_version(session, model_name, body.model_version)
    count = len(instances) if instances is not None else len(body.images or ())
    check_servable(ctx.db, version, roles, actor, count)  # 410 purged, 409 superseded
    try:
        model = ctx.models.get(version)
    except CorruptArtifactError as error:
        record_artifact_failure(ctx.db, error, actor)
        raise
    limit = ctx.settings.max_predict_batch
    shape = model.spec.image_shape
    batch = (service.batch_from_instances(instances, limit, shape) if instances is not None
             else service.batch_from_pngs(body.images, limit, shape))
    labels, probabilities = service.predict(model, batch, ctx.device)
    return PredictResponse(
        model_name=model_name,
        model_version=version.version,
        class_names=list((version.model_card or {}).get("class_names") or []) or None,
        predictions=[Prediction(label=label, probabilities=p)
                     for label, p in zip(labels, probabilities)],
    )
