"""``/datasets``: register (admin), list and read (any role). Thin: app/datasets/service.py
does the work, as it does for the CLI."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from app.api.deps import ActorDep, CtxDep, SessionDep
from app.api.pagination import decode_cursor, encode_cursor
from app.auth.deps import ANY_ROLE, require
from app.auth.service import Role
from app.core.errors import InvalidInputError
from app.datasets import service
from app.datasets.models import Dataset
from app.datasets.service import NAME_PATTERN
from app.datasets.schemas import (
    DatasetCreate,
    DatasetLinks,
    DatasetList,
    DatasetRead,
    DatasetRegistered,
)

router = APIRouter(tags=["datasets"])


def to_read(row: Dataset) -> DatasetRead:
    return DatasetRead(
        name=row.name, format=row.format, source=row.source,
        class_names=list(row.class_names), num_classes=len(row.class_names),
        image_shape=list(row.image_shape), train_size=row.train_size,
        test_size=row.test_size, checksum=row.checksum, has_sample_ids=row.has_sample_ids,
        has_subjects=row.has_subjects, storage_key=row.storage_key,
        created_by=row.created_by, created_at=row.created_at,
        links=DatasetLinks(self=f"/datasets/{row.name}"),
    )


@router.post("/datasets", status_code=201, response_model=DatasetRegistered,
             dependencies=[Depends(require(Role.admin))])
def register_dataset(body: DatasetCreate, ctx: CtxDep,
                     actor: ActorDep) -> DatasetRegistered:
    """Read, check and register a dataset from a path on the server (all or nothing)."""
    row, notes = service.register_dataset(
        ctx.db, ctx.settings.dataset_dir, name=body.name, format=body.format, path=body.path,
        classes=body.classes, actor=actor)
    return DatasetRegistered(**to_read(row).model_dump(), notes=notes)


@router.get("/datasets", response_model=DatasetList,
            dependencies=[Depends(require(*ANY_ROLE))])
def list_datasets(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> DatasetList:
    after = decode_cursor(cursor)
    if after is not None and not (isinstance(after, str) and re.fullmatch(NAME_PATTERN, after)):
        raise InvalidInputError("cursor is not one this service issued", "cursor")
    rows, last = service.list_datasets(session, limit, after)
    return DatasetList(items=[to_read(row) for row in rows],
                       next_cursor=encode_cursor(last) if last is not None else None)


@router.get("/datasets/{name}", response_model=DatasetRead,
            dependencies=[Depends(require(*ANY_ROLE))])
def read_dataset(name: Annotated[str, Path(max_length=100)],
                 session: SessionDep) -> DatasetRead:
    return to_read(service.get_dataset(session, name))
