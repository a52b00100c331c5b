"""Registering a trained model as a new version, bootstrapping the shipped base model, and
promoting a version to production.

A model is a name bound to one registered dataset and one architecture. Its versions are
always evaluated on that dataset, and a model card that names another dataset (by
checksum) is refused: a model is never registered against data it was not trained on.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import select
from sqlalchemy.orm import Session
from torch import nn

from app.architectures.base import ArchitectureError, ModelSpec
from app.architectures.catalog import check_fits, get_architecture, load_weights
from app.audit.service import AuditAction, record
from app.context import ServiceContext
from app.core.errors import ConflictError, InvalidInputError
from app.datasets.service import MNIST_DATASET
from app.ml.data import ImageData
from app.registry.artifacts import deserialize_state, sha256_bytes
from app.registry.model_kinds import kind_of, model_backbone_sha256, model_bytes, spec_of
from app.registry.models import ModelVersion, RegisteredModel
from app.forget_requests.models import ForgetRequest, RequestStatus
from app.registry.service import artifact_key, get_version, insert_version
from app.subjects.supersession import ensure_promotable

logger = logging.getLogger("unlearn.registry")

MODEL_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,99}$"


def check_model_name(name: str) -> str:
    if not re.fullmatch(MODEL_NAME_PATTERN, name):
        raise InvalidInputError(
            f"model name {name!r} must be 1-100 characters of a-z, 0-9, '.', '_' or '-', "
            f"starting with a letter or digit", "model_name")
    return name


def _same_dataset(checksum_a: str, checksum_b: str) -> bool:
    # A seeded subset (UNLEARN_DATA_SUBSET, tests) is still the dataset it was cut from.
    return checksum_a.split(":subset(")[0] == checksum_b.split(":subset(")[0]


def check_card_dataset(card: dict[str, Any], data: ImageData, dataset_name: str) -> None:
    """Refuse a model card that names another dataset than the one it is registered on."""
    named = card.get("dataset_checksum")
    if named and not _same_dataset(str(named), data.checksum):
        raise InvalidInputError(
            f"the model card names dataset checksum {named}, but dataset {dataset_name!r} "
            f"has checksum {data.checksum.split(':subset(')[0]}: these weights were trained "
            f"on other data", "dataset")


def model_spec(ctx: ServiceContext, dataset_name: str, architecture: str) -> ModelSpec:
    """The network of ``architecture`` shaped for the dataset's images and classes."""
    data = ctx.datasets.get(dataset_name)
    try:
        arch = check_fits(architecture, data.image_shape)
    except ArchitectureError as error:
        raise InvalidInputError(str(error), "arch") from None
    return ModelSpec(arch.name, data.num_classes, data.image_shape)


def _identity(ctx: ServiceContext, model_name: str, dataset_name: str | None,
              architecture: str | None) -> tuple[str, str]:
    """(dataset, architecture) for a new version of ``model_name``: an existing model's own,
    which a caller may restate but not change; for a new model, what the caller gives."""
    with ctx.db.session() as session:
        existing = session.get(RegisteredModel, model_name)
        if existing is None:
            return dataset_name or MNIST_DATASET, architecture or "mnist-cnn"
        if dataset_name and dataset_name != existing.dataset_name:
            raise ConflictError(
                f"model {model_name!r} is trained on dataset {existing.dataset_name!r}, not "
                f"{dataset_name!r}; register the weights under a new model name", "dataset")
        if architecture and _canonical(architecture) != _canonical(existing.architecture):
            raise ConflictError(
                f"model {model_name!r} is a {existing.architecture}, not a {architecture}; "
                f"register these weights under a new model name", "arch")
        return existing.dataset_name, existing.architecture


def _canonical(architecture: str) -> str:
    try:
        return get_architecture(architecture).name
    except ArchitectureError as error:
        raise InvalidInputError(str(error), "arch") from None


def register_model(ctx: ServiceContext, state: dict[str, torch.Tensor], *,
                   model_card: dict[str, Any], actor: str, model_name: str | None = None,
                   dataset_name: str | None = None, architecture: str | None = None,
                   method: str = "train", params: dict[str, Any] | None = None) -> ModelVersion:
    """Register weights as a new version of ``model_name`` (default: the default model).

    The tensors must fit the architecture shaped for the dataset (names, shapes, class
    count) and the card must not name another dataset; either is a 422 that says why."""
    model_name = check_model_name(model_name or ctx.model_name)
    dataset_name, architecture = _identity(ctx, model_name, dataset_name,
                                           architecture or model_card.get("architecture"))
    check_card_dataset(model_card, ctx.datasets.get(dataset_name), dataset_name)
    spec = model_spec(ctx, dataset_name, architecture)
    try:
        model = load_weights(spec, state)
    except ArchitectureError as error:
        raise InvalidInputError(str(error), "weights") from None
    return register_trained_model(ctx, model, model_card=model_card, actor=actor,
                                  model_name=model_name, dataset_name=dataset_name,
                                  method=method, params=params)


def register_trained_model(ctx: ServiceContext, model: nn.Module, *, model_card: dict[str, Any],
                           actor: str, model_name: str | None = None,
                           dataset_name: str | None = None, method: str = "train",
                           params: dict[str, Any] | None = None) -> ModelVersion:
    """Store the weights durably, evaluate them, and commit the version row (and, for a new
    model, its registry row) with the audit entry. If the commit fails, the artifact is
    removed again: no file without a row. Works for a model of any kind."""
    model_name = check_model_name(model_name or ctx.model_name)
    dataset_name, _ = _identity(ctx, model_name, dataset_name, None)
    data = ctx.datasets.get(dataset_name)
    spec = spec_of(model)
    model.eval()
    payload, state = model_bytes(model)
    key = artifact_key(model_name)
    backbone = model_backbone_sha256(model, state)
    metrics = ctx.evaluator.version_metrics(model, backbone, data, sha256_bytes(payload))
    card = {"architecture": spec.architecture, "num_classes": spec.num_classes,
            "image_shape": list(spec.image_shape), "dataset": dataset_name,
            "class_names": list(data.class_names), **model_card}
    card.setdefault("dataset_checksum", data.checksum.split(":subset(")[0])
    sha = ctx.store.put(key, payload)
    try:
        with ctx.db.session() as session:
            registered = session.get(RegisteredModel, model_name, with_for_update=True)
            if registered is None:
                session.add(RegisteredModel(name=model_name, dataset_name=dataset_name,
                                            architecture=spec.architecture, created_by=actor))
                session.flush()
                record(session, AuditAction.model_created, actor, model_name=model_name,
                       details={"dataset": dataset_name, "architecture": spec.architecture,
                                "dataset_checksum": card["dataset_checksum"]})
            row = insert_version(
                session,
                model_name=model_name,
                parent_version=None,
                architecture=spec.architecture,
                kind=kind_of(model),
                method=method,
                params=params or {},
                forgotten_classes=[],
                forgotten_sample_ids=[],
                artifact_path=key,
                artifact_sha256=sha,
                backbone_sha256=backbone,
                metrics=metrics,
                model_card=card,
                created_by=actor,
            )
            test = metrics["test"]
            assert test is not None  # every dataset has test images (check_not_empty)
            record(
                session, AuditAction.model_registered, actor,
                model_name=model_name, model_version=row.version,
                details={"artifact_sha256": sha, "method": method,
                         "test_accuracy": test["accuracy"]},
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
    """Register the shipped base model as version 1 of the default model (on dataset
    'mnist') if the model has no version yet."""
    with ctx.db.session() as session:
        existing = session.scalar(
            select(ModelVersion).where(ModelVersion.model_name == ctx.model_name).limit(1)
        )
    if existing is not None:
        return None
    state, card = load_shipped_model(weights_path)
    try:
        row = register_model(ctx, state, model_card=card, actor="system:bootstrap",
                             dataset_name=MNIST_DATASET, params={"source": str(weights_path.name)})
    except InvalidInputError as error:
        raise BaseModelError(f"cannot register {weights_path.name}: {error.message}") from None
    logger.info("registered shipped base model as version %s", row.version)
    return row


def promote(session: Session, model_name: str, version: int, actor: str) -> ModelVersion:
    row = get_version(session, model_name, version)
    refuse_unverified(session, row, "promoted")
    ensure_promotable(session, row)  # 409 for a version holding erased data
    registered = session.get(RegisteredModel, model_name, with_for_update=True)
    assert registered is not None  # get_version found one of its versions
    previous = registered.production_version
    registered.production_version = version
    record(
        session, AuditAction.version_promoted, actor,
        model_name=model_name, model_version=version,
        details={"previous_production_version": previous},
    )
    return row


def refuse_unverified(session: Session, row: ModelVersion, what: str) -> None:
    """409 for a version whose forget request did not meet its acceptance criteria."""
    if row.forget_request_id is None:
        return
    request = session.get(ForgetRequest, row.forget_request_id)
    if request is not None and request.status == RequestStatus.unverified.value:
        failed = (request.verification or {}).get("failed") or []
        raise ConflictError(
            f"version {row.version} is unverified and cannot be {what}: forget request "
            f"{request.id} failed its acceptance criteria ({', '.join(failed) or 'unknown'})",
            "version")
