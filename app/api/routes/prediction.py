from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from app.auth.deps import KeyCheck, get_principal, require_in_route
from app.auth.service import Principal, Role
from app.context import ServiceContext
from app.core.errors import InvalidInputError
from app.observability.metrics import record_prediction
from app.prediction import service
from app.prediction.body_parsing import BodyParser, ParseFailure, parse_predict_body
from app.prediction.predictor import Predictor
from app.prediction.schemas import PredictRequest, PredictResponse
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
    openapi_extra={"requestBody": {
        "required": True,
        "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
    }},
)
async def predict(request: Request,
                  # auditor: may query superseded versions (audited) for before/after
                  # comparisons. The key is checked in _prepare's thread hop, first.
                  key: Annotated[KeyCheck, Depends(require_in_route(Role.client,
                                                                    Role.auditor))],
                  ctx: Annotated[ServiceContext, Depends(get_context)],
                  predictor: Annotated[Predictor, Depends(get_predictor)]) -> Response:
    raw = await read_body(request, key)
    parsed = None
    if get_body_parser(request).offloads(len(raw)):
        # A large body goes to a parsing process; read_body checked the key before it read
        # it, so nobody gets a parse for free. Then the version is looked up in a hop.
        assert key.checked, "read_body checks the key of every large body"
        parsed = await _parse_body(request, raw)
    # Otherwise the key, the small body and the version in one hop (one database session).
    version, model, batch = await run_in_threadpool(_prepare, ctx, predictor, key, raw,
                                                    parsed)
    probabilities = await predictor.probabilities(version, model, batch)
    record_prediction(ctx, version.model_name, version.version, len(probabilities))
    # Encoded here, in PredictResponse's shape (the documented response_model): returned
    # as a model, every prediction would be built, validated again against the response
    # model and encoded through the standard json module, which costs more than the
    # forward pass for a large batch.
    return Response(orjson.dumps({
        "model_name": version.model_name,
        "model_version": version.version,
        "class_names": service.class_names(version),
        "predictions": [{"label": label, "probabilities": p}
                        for label, p in zip(probabilities.argmax(axis=1).tolist(),
                                            probabilities.tolist())],
    }), media_type="application/json")


async def read_body(request: Request, key: KeyCheck) -> bytes:
    """The request's body.

    A body that declares fewer than ``UNLEARN_PREDICT_PARSE_OFFLOAD_BYTES`` bytes is read
    at once, and the route checks the key in the hop that looks the version up (one hop
    a call). A larger body, or one of no declared length (chunked), is read only once the
    key has passed, in a hop of its own: an unknown caller cannot make the server take in
    up to ``UNLEARN_MAX_BODY_BYTES`` for its 401. (The HTTP server holds a body to its
    declared length, so a small declared body cannot turn out large.)"""
    declared = request.headers.get("content-length", "")
    threshold = request.app.state.ctx.settings.predict_parse_offload_bytes
    if not (declared.isdigit() and int(declared) < threshold):
        await run_in_threadpool(key.principal)  # kept: the route's own check reuses it
    return await request.body()


def get_body_parser(request: Request) -> BodyParser:
    """The app's one BodyParser (its parsing processes start with the first large body)."""
    parser = getattr(request.app.state, "body_parser", None)
    if parser is None:
        settings = request.app.state.ctx.settings
        parser = request.app.state.body_parser = BodyParser(
            settings.predict_parse_offload_bytes, settings.predict_parse_processes)
    return parser


async def _parse_body(request: Request, raw: bytes) -> tuple[PredictRequest, Any]:
    """The request model and its instances, parsed in a parsing process (a large body)."""
    with _body_errors_as_422():
        return await get_body_parser(request).run(len(raw), parse_predict_body, raw, True)


@contextmanager
def _body_errors_as_422() -> Iterator[None]:
    """pydantic's errors, raised here or in a parsing process, as FastAPI's 422."""
    try:
        yield
    except ValidationError as error:
        errors: list = list(error.errors())
    except ParseFailure as failure:
        errors = failure.errors
    else:
        return
    raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors])


def _prepare(ctx: ServiceContext, predictor: Predictor, key: KeyCheck, raw: bytes,
             parsed: tuple[PredictRequest, Any] | None = None):
    """The caller's key first (401/403 before anything else is answered), the body (unless
    ``parsed`` already), then the version and its model, and the images checked against
    the shape that version takes (blocking work: database, files, decoding; run in a
    thread)."""
    with ctx.db.session() as session:  # one read-only session for the key and the version
        principal = key.principal(session)
        if parsed is None:
            with _body_errors_as_422():
                parsed = parse_predict_body(raw, False)
        body: PredictRequest = parsed[0]
        instances: Any = parsed[1]  # lists, or one array from a parsing process
        if (instances is None) == (body.images is None):
            raise InvalidInputError("give exactly one of 'instances' or 'images'", "instances")
        count = len(instances) if instances is not None else len(body.images or ())
        actor, roles = principal.name, principal.roles
        version, model = predictor.load(
            body.model_version, actor, model_name=body.model_name or ctx.model_name,
            # 410 for a purged version, 409 for a superseded one (admins and auditors may
            # still ask it, audited): checked before the model is loaded.
            check=lambda row, state: check_servable(ctx.db, row, roles, actor, count, state),
            session=session)
    limit = ctx.settings.max_predict_batch
    shape = service.image_shape(version)
    batch = (service.batch_from_instances(instances, limit, shape) if instances is not None
             else service.batch_from_pngs(body.images or [], limit, shape))
    return version, model, batch
