"""Model and version routes. Every route addresses the default model unless ``?model=NAME``
names another, so the design card's paths (``/models/3/metrics``) keep working."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from app.api.deps import ActorDep, CtxDep, SessionDep
from app.api.fields import omit_fields
from app.api.pagination import decode_id_cursor, encode_cursor
from app.auth.deps import ANY_ROLE, require
from app.auth.service import Role
from app.context import ServiceContext
from app.forget_requests.models import ForgetRequest
from app.registration import promote
from app.registry import service
from app.registry.links import version_path
from app.registry.models import ModelVersion, RegisteredModel
from app.subjects.supersession import version_state, version_states
from app.registry.schemas import (
    RegisteredModelList,
    RegisteredModelRead,
    VersionLinks,
    VersionList,
    VersionMetrics,
    VersionRead,
)

router = APIRouter(tags=["models"])


def _state_fields(state) -> dict:
    if state is None:
        return {}
    return {"status": state.status.value, "superseded_by": state.superseded_by,
            "use_instead": state.use_instead, "purged_at": state.purged_at}
ANYONE = [Depends(require(*ANY_ROLE))]

VersionPath = Annotated[int, Path(ge=1, le=2_147_483_647, description="Version number")]
ModelQuery = Annotated[str | None, Query(
    min_length=1, max_length=100,
    description="The registered model to address; default: the service's default model "
                "(UNLEARN_MODEL_NAME). See GET /registered-models.")]


def to_read(row: ModelVersion, production: int | None, default_model: str,
            full: bool = False, sample_keys=None, state=None) -> VersionRead:
    test = (row.metrics or {}).get("test") or {}
    forgotten_ids: list[int | str] | None = None
    if full:
        forgotten_ids = (list(row.forgotten_sample_ids) if sample_keys is None
                         else [sample_keys(i) for i in row.forgotten_sample_ids])

    def path(version: int, suffix: str = "") -> str:
        return version_path(row.model_name, version, default_model, suffix)

    return VersionRead(
        model_name=row.model_name,
        version=row.version,
        parent_version=row.parent_version,
        is_production=row.version == production,
        kind=row.kind,
        architecture=row.architecture,
        forget_request_id=row.forget_request_id,
        method=row.method,
        params=row.params,
        forgotten_classes=row.forgotten_classes,
        forgotten_sample_count=len(row.forgotten_sample_ids),
        forgotten_sample_ids=forgotten_ids,
        artifact_path=row.artifact_path,
        artifact_sha256=row.artifact_sha256,
        test_accuracy=test.get("accuracy"),
        created_by=row.created_by,
        created_at=row.created_at,
        model_card=row.model_card if full else None,
        **_state_fields(state),
        links=VersionLinks(
            self=path(row.version),
            metrics=path(row.version, "/metrics"),
            parent=path(row.parent_version) if row.parent_version else None,
            forget_request=(f"/forget-requests/{row.forget_request_id}"
                            if row.forget_request_id else None),
        ),
    )


def _sample_keys(ctx: ServiceContext, model_name: str):
    """A function from training ID to the dataset's own ID, or None for integer IDs."""
    data = ctx.model_data(model_name)
    return data.key_of if data.sample_keys is not None else None


@router.get("/registered-models", response_model=RegisteredModelList, dependencies=ANYONE)
def list_registered_models(ctx: CtxDep,
                           session: SessionDep
                           ) -> RegisteredModelList:
    """Every hosted model with its dataset, architecture and production version."""
    return RegisteredModelList(items=[
        _model_read(ctx, session, model) for model in service.list_registered_models(session)])


@router.get("/registered-models/{name}", response_model=RegisteredModelRead,
            dependencies=ANYONE)
def read_registered_model(name: Annotated[str, Path(max_length=100)],
                          ctx: CtxDep,
                          session: SessionDep
                          ) -> RegisteredModelRead:
    return _model_read(ctx, session, service.get_registered_model(session, name, "name"))


def _model_read(ctx: ServiceContext, session: Session,
                model: RegisteredModel) -> RegisteredModelRead:
    card = {}
    if model.production_version is not None:
        card = service.get_version(session, model.name, model.production_version).model_card
    return RegisteredModelRead(
        name=model.name,
        dataset=model.dataset_name,
        architecture=model.architecture,
        is_default=model.name == ctx.model_name,
        production_version=model.production_version,
        version_count=service.version_count(session, model.name),
        num_classes=card.get("num_classes"),
        class_names=card.get("class_names"),
        image_shape=card.get("image_shape"),
        created_by=model.created_by,
        created_at=model.created_at,
        links={"versions": f"/models?model={model.name}", "dataset": f"/datasets/{model.dataset_name}"},
    )


@router.get("/models", response_model=VersionList, dependencies=ANYONE)
def list_models(
    ctx: CtxDep,
    session: SessionDep,
    model: ModelQuery = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    include: Annotated[list[Literal["forgotten_sample_ids", "model_card"]], Query(
        description="Detail fields to add to each item (repeatable); without it they are "
                    "omitted, as GET /models/{version} always has them.")] = [],  # noqa: B006
) -> JSONResponse:  # a VersionList (response_model) less the omitted fields
    """The versions of one model (the default model unless ``?model=`` names another).
    Items are summaries: ``forgotten_sample_ids`` and ``model_card`` only with ``?include=``."""
    after = decode_id_cursor(cursor)
    model_name = model or ctx.model_name
    production = service.get_registered_model(session, model_name, "model").production_version
    rows, last = service.list_versions(session, model_name, limit, after)
    keys = _sample_keys(ctx, model_name) if "forgotten_sample_ids" in include else None
    states = version_states(session, model_name)
    listed = VersionList(items=[to_read(row, production, ctx.model_name, full=bool(include),
                                        sample_keys=keys, state=states.get(row.version))
                                for row in rows],
                         next_cursor=encode_cursor(last) if last is not None else None)
    return omit_fields(listed, {"forgotten_sample_ids", "model_card"} - set(include))


@router.get("/models/{version}", response_model=VersionRead, dependencies=ANYONE)
def read_model(version: VersionPath, ctx: CtxDep,
               session: SessionDep,
               model: ModelQuery = None) -> VersionRead:
    model_name = model or ctx.model_name
    row = service.get_version(session, model_name, version)
    return to_read(row, service.production_version(session, model_name), ctx.model_name,
                   full=True, sample_keys=_sample_keys(ctx, model_name),
                   state=version_state(session, row))


@router.get("/models/{version}/metrics", response_model=VersionMetrics,
            dependencies=[Depends(require(Role.auditor, Role.privacy_officer))])
def read_model_metrics(version: VersionPath, ctx: CtxDep,
                       session: SessionDep,
                       model: ModelQuery = None) -> VersionMetrics:
    row = service.get_version(session, model or ctx.model_name, version)
    request_metrics = None
    if row.forget_request_id:
        request = session.get(ForgetRequest, row.forget_request_id)
        request_metrics = request.metrics if request else None
    return VersionMetrics(
        model_name=row.model_name,
        version=row.version,
        parent_version=row.parent_version,
        forgotten_classes=row.forgotten_classes,
        forgotten_sample_count=len(row.forgotten_sample_ids),
        test=(row.metrics or {}).get("test"),
        forget_request_id=row.forget_request_id,
        forget_request_metrics=request_metrics,
    )


@router.post("/models/{version}/promote", response_model=VersionRead,
             dependencies=[Depends(require(Role.admin))])
def promote_model(version: VersionPath, ctx: CtxDep,
                  session: SessionDep,
                  actor: ActorDep,
                  model: ModelQuery = None) -> VersionRead:
    model_name = model or ctx.model_name
    row = promote(session, model_name, version, actor)
    return to_read(row, version, ctx.model_name, full=True,
                   sample_keys=_sample_keys(ctx, model_name))
