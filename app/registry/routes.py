from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from sqlalchemy.orm import Session

from app.api.deps import get_actor, get_ctx, get_session
from app.api.pagination import decode_id_cursor, encode_cursor
from app.auth.deps import ANY_ROLE, require
from app.auth.service import Role
from app.core.context import ServiceContext
from app.core.errors import InvalidInputError
from app.forgetting.models import ForgetRequest
from app.registry import service
from app.registry.models import ModelVersion
from app.registry.schemas import VersionLinks, VersionList, VersionMetrics, VersionRead

router = APIRouter(tags=["models"])
ANYONE = [Depends(require(*ANY_ROLE))]

VersionPath = Annotated[int, Path(ge=1, le=2_147_483_647, description="Version number")]


def to_read(row: ModelVersion, production: int | None, full: bool = False) -> VersionRead:
    test = (row.metrics or {}).get("test") or {}
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
        forgotten_sample_ids=row.forgotten_sample_ids if full else None,
        artifact_path=row.artifact_path,
        artifact_sha256=row.artifact_sha256,
        test_accuracy=test.get("accuracy"),
        created_by=row.created_by,
        created_at=row.created_at,
        model_card=row.model_card if full else None,
        links=VersionLinks(
            self=f"/models/{row.version}",
            metrics=f"/models/{row.version}/metrics",
            parent=f"/models/{row.parent_version}" if row.parent_version else None,
            forget_request=(f"/forget-requests/{row.forget_request_id}"
                            if row.forget_request_id else None),
        ),
    )


@router.get("/models", response_model=VersionList, dependencies=ANYONE)
def list_models(
    ctx: Annotated[ServiceContext, Depends(get_ctx)],
    session: Annotated[Session, Depends(get_session)],
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> VersionList:
    after = decode_id_cursor(cursor)
    rows, last = service.list_versions(session, ctx.model_name, limit, after)
    production = service.production_version(session, ctx.model_name)
    return VersionList(items=[to_read(row, production) for row in rows],
                       next_cursor=encode_cursor(last) if last is not None else None)


@router.get("/models/{version}", response_model=VersionRead, dependencies=ANYONE)
def read_model(version: VersionPath, ctx: Annotated[ServiceContext, Depends(get_ctx)],
               session: Annotated[Session, Depends(get_session)]) -> VersionRead:
    row = service.get_version(session, ctx.model_name, version)
    return to_read(row, service.production_version(session, ctx.model_name), full=True)


@router.get("/models/{version}/metrics", response_model=VersionMetrics,
            dependencies=[Depends(require(Role.auditor, Role.privacy_officer))])
def read_model_metrics(version: VersionPath, ctx: Annotated[ServiceContext, Depends(get_ctx)],
                       session: Annotated[Session, Depends(get_session)]) -> VersionMetrics:
    row = service.get_version(session, ctx.model_name, version)
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
def promote_model(version: VersionPath, ctx: Annotated[ServiceContext, Depends(get_ctx)],
                  session: Annotated[Session, Depends(get_session)],
                  actor: Annotated[str, Depends(get_actor)]) -> VersionRead:
    row = service.promote(session, ctx.model_name, version, actor)
    return to_read(row, version, full=True)
