"""The Open Inference Protocol (KServe v2) beside ``/predict``, so that KServe and Triton
clients call the service unchanged. Health routes are public (probes carry no key); model
metadata and inference need the client role, as ``/predict`` does. Versions are the
registry's version numbers; ``/v2/models/{name}/infer`` answers from production."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from app.api.deps import CtxDep
from app.auth.deps import KeyCheck, require, require_in_route
from app.auth.service import Role
from app.context import ServiceContext
from app.core.errors import NotFoundError
from app.health.routes import readiness
from app.prediction import inference_protocol as protocol
from app.prediction import service
from app.prediction.predictor import Predictor
from app.api.routes.prediction import (get_body_parser, get_caller, get_context,
                                       get_predictor, read_body)
from app.registry.models import ModelVersion, RegisteredModel
from app.registry.service import get_version, list_versions
from app.subjects.supersession import check_servable

router = APIRouter(prefix="/v2", tags=["open inference protocol (KServe v2)"])
client_only = [Depends(require(Role.client))]
# The inference routes check the key in the thread hop that looks the version up.
ClientKeyDep = Annotated[KeyCheck, Depends(require_in_route(Role.client))]

INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": protocol.InferenceRequest.model_json_schema()},
            "application/octet-stream": {"schema": {
                "type": "string", "format": "binary",
                "description": "Binary data extension: the JSON header (its length in the "
                "Inference-Header-Content-Length header), then the raw tensor bytes."}},
        },
    },
}


# Both probes are coroutines, as /healthz and /readyz are: a sync route would wait for a
# thread of the request pool, and a probe must answer while requests hold every one.
@router.get("/health/live", response_model=protocol.LiveResponse)
async def live() -> protocol.LiveResponse:
    return protocol.LiveResponse(live=True)


@router.get("/health/ready", response_model=protocol.ReadyResponse,
            responses={503: {"model": protocol.ReadyResponse}})
async def ready(request: Request) -> JSONResponse:
    """Ready when ``/readyz`` is (the database answers and its schema is at head): the same
    check, on the probe's own connection and thread, never the request database pool."""
    is_ready = (await readiness(request)).status == "ready"
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


@router.get("/models/{name}", response_model=protocol.ModelMetadata, dependencies=client_only)
def model_metadata(name: str, ctx: CtxDep):
    _check_name(ctx, name)
    with ctx.db.session() as session:
        versions, _ = list_versions(session, name, limit=100_000)
    return _metadata(ctx, name, versions[-1] if versions else None,
                     [str(v.version) for v in versions])


@router.get("/models/{name}/versions/{version}", response_model=protocol.ModelMetadata,
            dependencies=client_only)
def version_metadata(name: str, version: str,
                     ctx: CtxDep):
    _check_name(ctx, name)
    with ctx.db.session() as session:
        row = get_version(session, name, _version_number(version), "version")
    return _metadata(ctx, name, row, [str(row.version)])


@router.get("/models/{name}/ready", response_model=protocol.ReadyResponse,
            dependencies=client_only)
def model_ready(name: str, ctx: CtxDep,
                predictor: Annotated[Predictor, Depends(get_predictor)],
                actor: Annotated[str, Depends(get_caller)]):
    """Ready when the production version's model loads (its artifact verifies)."""
    _check_name(ctx, name)
    predictor.load(None, actor, "name", model_name=name)
    return protocol.ReadyResponse(ready=True)


@router.get("/models/{name}/versions/{version}/ready", response_model=protocol.ReadyResponse,
            dependencies=client_only)
def version_ready(name: str, version: str,
                  ctx: CtxDep,
                  predictor: Annotated[Predictor, Depends(get_predictor)],
                  actor: Annotated[str, Depends(get_caller)]):
    _check_name(ctx, name)
    predictor.load(_version_number(version), actor, "version", model_name=name)
    return protocol.ReadyResponse(ready=True)


@router.post("/models/{name}/infer", openapi_extra=INFER_BODY)
async def infer_production(name: str, request: Request, key: ClientKeyDep,
                           ctx: Annotated[ServiceContext, Depends(get_context)],
                           predictor: Annotated[Predictor, Depends(get_predictor)]) -> Response:
    return await _infer(name, None, request, ctx, predictor, key)


@router.post("/models/{name}/versions/{version}/infer", openapi_extra=INFER_BODY)
async def infer_version(name: str, version: str, request: Request, key: ClientKeyDep,
                        ctx: Annotated[ServiceContext, Depends(get_context)],
                        predictor: Annotated[Predictor, Depends(get_predictor)]) -> Response:
    return await _infer(name, version, request, ctx, predictor, key)


async def _infer(name: str, version: str | None, request: Request,
                 ctx: ServiceContext, predictor: Predictor, key: KeyCheck) -> Response:
    # The key (unless read_body checked it first, for a large body), the model's name and
    # the version are checked in _prepare, in one thread hop (not on the event loop, not
    # in hops of their own).
    body = await read_body(request, key)
    header_length = request.headers.get(protocol.HEADER_LENGTH)
    # A large JSON header is parsed in a parsing process (it holds the GIL for as long as
    # it takes); a small one, or raw tensor bytes after a small header, in the thread.
    parser = get_body_parser(request)
    offload = parser.offloads(_json_size(body, header_length))
    version_row, model, parsed = await run_in_threadpool(
        _prepare, ctx, predictor, key, name, version, body, header_length, not offload)
    if parsed is None:
        parsed = await parser.run(len(body), protocol.parse_request, body, header_length,
                                  service.image_shape(version_row),
                                  ctx.settings.max_predict_batch)
    probabilities = await predictor.probabilities(version_row, model, parsed.images)
    content, json_length = protocol.encode_response(name, version_row.version, parsed,
                                                    probabilities)
    if json_length is None:
        return Response(content, media_type="application/json")
    return Response(content, media_type="application/octet-stream",
                    headers={protocol.HEADER_LENGTH: str(json_length)})


def _json_size(body: bytes, header_length: str | None) -> int:
    """How many bytes of the body are JSON (the whole body without the binary extension)."""
    if header_length is not None and header_length.isdigit():
        return min(len(body), int(header_length))
    return len(body)


def _prepare(ctx: ServiceContext, predictor: Predictor, key: KeyCheck, name: str,
             version: str | None, body: bytes, header_length: str | None, parse: bool):
    """The caller's key first (401/403 before anything else is answered), then the version
    and its model (refused as ``/predict`` refuses it: 410 when purged, 409 when
    superseded), and the parsed request when ``parse``."""
    with ctx.db.session() as session:  # one read-only session for the key and the version
        principal = key.principal(session)
        version_number = _version_number(version) if version is not None else None
        # Checked before the model loads (a purged version's artifact is gone), so before
        # the body is parsed: the audit entry of an admin's query records no image count.
        row, model = predictor.load(
            version_number, principal.name,
            "version" if version_number is not None else "name", model_name=name,
            check=lambda row, state: check_servable(ctx.db, row, principal.roles,
                                                    principal.name, None, state),
            unregistered=_unknown_model(name), session=session)
    parsed = None
    if parse:
        parsed = protocol.parse_request(body, header_length, service.image_shape(row),
                                        ctx.settings.max_predict_batch)
    return row, model, parsed


def _metadata(ctx: ServiceContext, name: str, version: ModelVersion | None,
              versions: list[str]) -> protocol.ModelMetadata:
    shape = list(service.image_shape(version))
    return protocol.ModelMetadata(
        name=name,
        versions=versions,
        platform="pytorch_libtorch",
        inputs=[protocol.TensorMetadata(name=protocol.INPUT_NAME, datatype="FP32",
                                        shape=[-1, *shape])],
        outputs=[
            protocol.TensorMetadata(name=protocol.OUTPUT_PROBABILITIES, datatype="FP32",
                                    shape=[-1, service.num_classes(version)]),
            protocol.TensorMetadata(name=protocol.OUTPUT_LABEL, datatype="INT64", shape=[-1]),
        ],
        parameters={"accepted_input_datatypes": list(protocol.INPUT_DATATYPES),
                    "max_batch_size": ctx.settings.max_predict_batch},
    )


def _check_name(ctx: ServiceContext, name: str) -> None:
    """404 unless ``name`` is a registered model (``GET /registered-models`` lists them)."""
    with ctx.db.session() as session:
        if session.get(RegisteredModel, name) is None:
            raise _unknown_model(name)


def _unknown_model(name: str) -> NotFoundError:
    return NotFoundError(f"no model named {name!r}; GET /registered-models lists the "
                         f"hosted ones", "name")


def _version_number(version: str) -> int:
    if not version.isdigit() or not 1 <= int(version) <= 2_147_483_647:
        raise NotFoundError(f"no version {version!r}: versions are whole numbers from 1",
                            "version")
    return int(version)
