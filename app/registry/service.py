"""Registry operations: look up, list and publish versions (promotion, which asks the
forget requests and the data subjects, is ``app.registration.promote``)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.errors import NotFoundError
from app.registry.models import ModelVersion, RegisteredModel


def artifact_key(model_name: str) -> str:
    """A fresh, unique artifact name. Version numbers are assigned only when the row is
    committed, so the file is named by a UUID and the row points to it."""
    return f"{model_name}/{uuid.uuid4().hex}.safetensors"


def get_registered_model(session: Session, model_name: str, field: str = "model_name",
                         for_update: bool = False) -> RegisteredModel:
    model = session.get(RegisteredModel, model_name, with_for_update=for_update)
    if model is None:
        raise NotFoundError(f"model {model_name!r} is not registered", field)
    return model


def list_registered_models(session: Session) -> list[RegisteredModel]:
    return list(session.scalars(select(RegisteredModel).order_by(RegisteredModel.name)))


def version_count(session: Session, model_name: str) -> int:
    return int(session.scalar(select(func.count(ModelVersion.id))
                              .where(ModelVersion.model_name == model_name)) or 0)


def get_version(session: Session, model_name: str, version: int,
                field: str = "version") -> ModelVersion:
    row = session.scalar(
        select(ModelVersion).where(
            ModelVersion.model_name == model_name, ModelVersion.version == version
        )
    )
    if row is None:
        raise NotFoundError(f"model version {version} of {model_name!r} does not exist", field)
    return row


def production_version(session: Session, model_name: str) -> int | None:
    model = session.get(RegisteredModel, model_name)
    return model.production_version if model else None


def resolve_version(session: Session, model_name: str, version: int | None,
                    field: str = "model_version") -> ModelVersion:
    """The given version, or the production version when None."""
    if version is None:
        version = get_registered_model(session, model_name).production_version
        if version is None:
            raise NotFoundError(f"model {model_name!r} has no production version", field)
    return get_version(session, model_name, version, field)


def list_versions(session: Session, model_name: str, limit: int,
                  after_version: int | None = None) -> tuple[list[ModelVersion], int | None]:
    statement = (
        select(ModelVersion)
        .where(ModelVersion.model_name == model_name)
        .order_by(ModelVersion.version)
        .limit(limit + 1)
    )
    if after_version is not None:
        statement = statement.where(ModelVersion.version > after_version)
    rows = list(session.scalars(statement))
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].version
    return rows, None


def next_version_number(session: Session, model_name: str) -> int:
    current = session.scalar(
        select(func.max(ModelVersion.version)).where(ModelVersion.model_name == model_name)
    )
    return (current or 0) + 1


def insert_version(
    session: Session,
    *,
    model_name: str,
    parent_version: int | None,
    architecture: str,
    method: str,
    params: dict[str, Any],
    forgotten_classes: list[int],
    forgotten_sample_ids: list[int],
    artifact_path: str,
    artifact_sha256: str,
    backbone_sha256: str,
    metrics: Mapping[str, Any],
    model_card: dict[str, Any] | None = None,
    forget_request_id: str | None = None,
    created_by: str = "system",
    kind: str = "cnn",
) -> ModelVersion:
    """Insert a version row in the caller's transaction. The artifact must already be
    durable. The first version of a model becomes its production version."""
    registered = get_registered_model(session, model_name, for_update=True)
    row = ModelVersion(
        model_name=model_name,
        version=next_version_number(session, model_name),
        parent_version=parent_version,
        kind=kind,
        architecture=architecture,
        forget_request_id=forget_request_id,
        method=method,
        params=params,
        forgotten_classes=sorted(set(forgotten_classes)),
        forgotten_sample_ids=sorted(set(forgotten_sample_ids)),
        artifact_path=artifact_path,
        artifact_sha256=artifact_sha256,
        backbone_sha256=backbone_sha256,
        model_card=model_card or {},
        metrics=metrics,
        created_by=created_by,
    )
    session.add(row)
    session.flush()
    if registered.production_version is None:
        registered.production_version = row.version
    return row
