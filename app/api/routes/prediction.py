from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from app.auth.deps import get_principal, require
from app.auth.service import Principal, Role
from app.context import ServiceContext
from app.core.errors import InvalidInputError
from app.observability.metrics import record_prediction
from app.prediction import service
from app.prediction.predictor import Predictor
from app.prediction.schemas import Prediction, PredictRequest, PredictResponse
from app.subjects.supersession import check_servable

router = APIRouter(tags=["predictions"])


# The prediction routes' own dependencies are async: a sync dependency costs a trip through
# the thread pool on every call, which is felt at thousands of predictions a second.

async def get_predictor(request: Request) -> Predictor:
    """The app's one Predictor (and so one dynamic batcher), made on first use."""
    predictor = getattr(request.app.state, "predictor", None)
    if predictor is None:
        predictor = request.app.state.predictor = Predictor(request.app.state.ctx)
    return predictor


async def get_context(request: Request) -> ServiceContext:
    return request.app.state.ctx


async def get_caller(principal: Annotated[Principal, Depends(get_principal)]) -> str:
    """The calling key's name (what ``get_actor`` gives, without a thread-pool trip)."""
    return principal.name


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
                  ctx: Annotated[ServiceContext, Depends(get_context)],
                  predictor: Annotated[Predictor, Depends(get_predictor)],
                  actor: Annotated[str, Depends(get_caller)],
                  principal: Annotated[Principal, Depends(get_principal)]) -> PredictResponse:
    body, instances = _parse_body(await request.body())
    version, model, batch = await run_in_threadpool(_prepare, ctx, predictor, body,
                                                    instances, actor, principal.roles)
    probabilities = await predictor.probabilities(version, model, batch)
    record_prediction(ctx, version.model_name, version.version, len(probabilities))
    return PredictResponse(
        model_name=version.model_name,
        model_version=version.version,
        class_names=service.class_names(version),
        predictions=[Prediction(label=label, probabilities=p)
                     for label, p in zip(probabilities.argmax(axis=1).tolist(),
                                         probabilities.tolist())],
    )


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
            service.check_numbers_only(instances)
        return PredictRequest.model_validate(document), instances
    except ValidationError as error:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in error.errors()]
        ) from None


def _prepare(ctx: ServiceContext, predictor: Predictor, body: PredictRequest,
             instances: list | None, actor: str, roles: frozenset[str] = frozenset()):
    """The version and its model, then the images checked against the shape that version
    takes (blocking work: database, files, decoding; run in a thread)."""
    if (instances is None) == (body.images is None):
        raise InvalidInputError("give exactly one of 'instances' or 'images'", "instances")
    count = len(instances) if instances is not None else len(body.images or ())
    version, model = predictor.load(
        body.model_version, actor, model_name=body.model_name or ctx.model_name,
        # 410 for a purged version, 409 for a superseded one (admins and auditors may
        # still ask it, audited): checked before the model is loaded.
        check=lambda row: check_servable(ctx.db, row, roles, actor, count))
    limit = ctx.settings.max_predict_batch
    shape = service.image_shape(version)
    batch = (service.batch_from_instances(instances, limit, shape) if instances is not None
             else service.batch_from_pngs(body.images, limit, shape))
    return version, model, batch
