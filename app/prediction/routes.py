from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from app.api.deps import get_ctx
from app.core.context import ServiceContext
from app.core.errors import InvalidInputError
from app.prediction import service
from app.prediction.schemas import Prediction, PredictRequest, PredictResponse
from app.registry.service import resolve_version

router = APIRouter(tags=["predictions"])


@router.post("/predict", response_model=PredictResponse)
def predict(body: PredictRequest,
            ctx: Annotated[ServiceContext, Depends(get_ctx)]) -> PredictResponse:
    if (body.instances is None) == (body.images is None):
        raise InvalidInputError("give exactly one of 'instances' or 'images'", "instances")
    limit = ctx.settings.max_predict_batch
    batch = (service.batch_from_instances(body.instances, limit) if body.instances is not None
             else service.batch_from_pngs(body.images, limit))
    with ctx.db.session() as session:
        version = resolve_version(session, ctx.model_name, body.model_version)
    model = ctx.models.get(version)
    labels, probabilities = service.predict(model, batch, ctx.device)
    return PredictResponse(
        model_version=version.version,
        predictions=[Prediction(label=label, probabilities=p)
                     for label, p in zip(labels, probabilities)],
    )
