"""Registry tables. A version row is written once and never updated; the production
pointer lives on ``registered_models`` so that promoting does not touch a version."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, UtcDateTime, utcnow


class RegisteredModel(Base):
    __tablename__ = "registered_models"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    # The registered dataset every version of this model is trained and evaluated on.
    dataset_name: Mapped[str] = mapped_column(String(100), default="mnist")
    architecture: Mapped[str] = mapped_column(String(64), default="mnist-cnn")
    production_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_by: Mapped[str] = mapped_column(String(200), default="system")
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_name", "version", name="uq_model_versions_name_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(ForeignKey("registered_models.name"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    parent_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    kind: Mapped[str] = mapped_column(String(32), default="cnn")
    architecture: Mapped[str] = mapped_column(String(64))
    # The forget request that produced this version (None for trained/registered versions).
    # Unique: a request never yields two versions, whatever the workers do.
    forget_request_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True,
                                                          unique=True)
    method: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Cumulative: a child carries everything its ancestors forgot plus its own request.
    forgotten_classes: Mapped[list[int]] = mapped_column(JSON, default=list)
    forgotten_sample_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    artifact_path: Mapped[str] = mapped_column(String(500))
    artifact_sha256: Mapped[str] = mapped_column(String(64))
    # Hash of every layer but the output layer: versions sharing it share cached features.
    backbone_sha256: Mapped[str] = mapped_column(String(64))
    model_card: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_by: Mapped[str] = mapped_column(String(200), default="system")
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
