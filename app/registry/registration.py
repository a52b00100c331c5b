"""Registering a trained model as a new version, and bootstrapping the shipped base model."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import select
from torch import nn

from app.audit.service import AuditAction, record
from app.core.context import ServiceContext
from app.ml.network import ARCHITECTURE, build_model
from app.registry.artifacts import (
    backbone_sha256,
    deserialize_state,
    sha256_bytes,
)
from app.registry.model_kinds import kind_of, model_bytes
from app.registry.models import ModelVersion
from app.registry.service import artifact_key, insert_version

logger = logging.getLogger("unlearn.registry")


def register_model(ctx: ServiceContext, state: dict[str, torch.Tensor], *,
                   model_card: dict[str, Any], actor: str, method: str = "train",
                   params: dict[str, Any] | None = None) -> ModelVersion:
    """Store the weights durably, evaluate them, and commit the version row with its audit
    entry. If the commit fails, the artifact is removed again: no file without a row."""
    model = build_model(model_card.get("architecture", ARCHITECTURE))
    model.load_state_dict(state)
    return register_trained_model(ctx, model, model_card=model_card, actor=actor,
                                  method=method, params=params)


def register_trained_model(ctx: ServiceContext, model: nn.Module, *, model_card: dict[str, Any],
                           actor: str, method: str = "train",
                           params: dict[str, Any] | None = None) -> ModelVersion:
    """``register_model`` for a model of any kind (a CNN or a SISA ensemble)."""
    model.eval()
    payload, state = model_bytes(model)
    key = artifact_key(ctx.model_name)
    backbone = backbone_sha256(state)
    metrics = ctx.evaluator.version_metrics(model, backbone, ctx.data.get(),
                                            sha256_bytes(payload))
    sha = ctx.store.put(key, payload)
    try:
        with ctx.db.session() as session:
            row = insert_version(
                session,
                model_name=ctx.model_name,
                parent_version=None,
                architecture=ARCHITECTURE,
                kind=kind_of(model),
                method=method,
                params=params or {},
                forgotten_classes=[],
                forgotten_sample_ids=[],
                artifact_path=key,
                artifact_sha256=sha,
                backbone_sha256=backbone,
                metrics=metrics,
                model_card=model_card,
                created_by=actor,
            )
            record(
                session, AuditAction.model_registered, actor,
                model_name=ctx.model_name, model_version=row.version,
                details={"artifact_sha256": sha, "method": method,
                         "test_accuracy": metrics["test"]["accuracy"]},
            )
    except BaseException:
        ctx.store.delete(key)
        raise
    return row


class BaseModelError(RuntimeError):
    pass


def load_shipped_model(weights_path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read the shipped weights and their model card, checking the card's sha256."""
    card_path = weights_path.with_suffix(".json")
    if not weights_path.exists() or not card_path.exists():
        raise BaseModelError(
            f"no shipped base model at {weights_path} (+ {card_path.name}); "
            f"run `unlearn train` to make one"
        )
    data = weights_path.read_bytes()
    card = json.loads(card_path.read_text())
    if sha256_bytes(data) != card.get("sha256"):
        raise BaseModelError(f"{weights_path} does not match the sha256 in {card_path.name}")
    return deserialize_state(data), card


def ensure_base_version(ctx: ServiceContext, weights_path: Path) -> ModelVersion | None:
    """Register the shipped base model as version 1 if the model has no version yet."""
    with ctx.db.session() as session:
        existing = session.scalar(
            select(ModelVersion).where(ModelVersion.model_name == ctx.model_name).limit(1)
        )
    if existing is not None:
        return None
    state, card = load_shipped_model(weights_path)
    row = register_model(ctx, state, model_card=card, actor="system:bootstrap",
                         params={"source": str(weights_path.name)})
    logger.info("registered shipped base model as version %s", row.version)
    return row
