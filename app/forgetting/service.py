"""Filing, reading and listing forget requests."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.audit.service import AuditAction, record
from app.core.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
)
from app.forgetting.models import ForgetRequest, RequestStatus
from app.core.config import Settings, get_settings
from app.forgetting.schemas import ForgetRequestCreate
from app.ml.data import TRAIN_SIZE, ImageData
from app.db.session import Database
from app.registry.service import resolve_version
from app.unlearning.base import ForgetTarget, MethodParams, UnlearningMethod
from app.unlearning.catalog import METHODS, get_method
from app.verification.criteria import resolve_acceptance


def validate_method_params(method_name: str, params: dict) -> tuple[UnlearningMethod, MethodParams]:
    method = get_method(method_name)
    if method is None:
        raise InvalidInputError(
            f"unknown method {method_name!r}; available: {', '.join(sorted(METHODS))}", "method"
        )
    try:
        return method, method.Params.model_validate(params)
    except ValidationError as error:
        first = error.errors()[0]
        location = ".".join(str(part) for part in first["loc"])
        field = f"params.{location}" if location else "params"
        raise InvalidInputError(f"{field}: {first['msg']}", field) from None


def validate_target(method: UnlearningMethod, classes: list[int], sample_ids: list[int],
                    max_sample_ids: int) -> tuple[list[int], list[int]]:
    """Deduplicate and check the target against the method's abilities and the ID range."""
    classes = sorted(set(classes))
    if not classes and not sample_ids:
        raise InvalidInputError("the request forgets nothing: give classes or sample_ids",
                                "classes")
    if sample_ids and not method.supports_samples:
        raise InvalidInputError(
            f"method {method.name!r} forgets whole classes only; choose a method that "
            f"forgets individual samples for sample_ids",
            "sample_ids",
        )
    if classes and not method.supports_classes:
        raise InvalidInputError(f"method {method.name!r} does not forget classes", "classes")
    if len(sample_ids) > max_sample_ids:
        raise PayloadTooLargeError(
            f"{len(sample_ids)} sample IDs exceed the limit of {max_sample_ids} per request",
            "sample_ids",
        )
    for position, sample_id in enumerate(sample_ids):
        if not 0 <= sample_id < TRAIN_SIZE:
            raise InvalidInputError(
                f"sample_ids[{position}] = {sample_id} is not a training-split index "
                f"(0-{TRAIN_SIZE - 1})",
                f"sample_ids[{position}]",
            )
    return classes, sorted(set(sample_ids))


def file_request(session: Session, model_name: str, body: ForgetRequestCreate, actor: str,
                 max_sample_ids: int, idempotency_key: str | None = None,
                 body_sha256: str | None = None, settings: Settings | None = None,
                 data: ImageData | None = None) -> ForgetRequest:
    """Validate a request completely, then queue it with its audit entry (one transaction).

    ``settings`` give the default acceptance criteria (the process's settings when None);
    with ``data``, the method also checks its parameters against the target's size."""
    method, params = validate_method_params(body.method, body.params)
    classes, sample_ids = validate_target(method, body.classes, body.sample_ids, max_sample_ids)
    acceptance = resolve_acceptance(settings or get_settings(), classes, sample_ids,
                                    body.acceptance)
    source = resolve_version(session, model_name, body.model_version)
    if source.kind not in method.model_kinds:
        raise InvalidInputError(
            f"method {method.name!r} works on model kinds {', '.join(method.model_kinds)}; "
            f"version {source.version} is of kind {source.kind!r}", "method")
    if data is not None:
        method.check_request(params, ForgetTarget(
            tuple(classes), tuple(sample_ids), prior_classes=tuple(source.forgotten_classes),
            prior_sample_ids=tuple(source.forgotten_sample_ids)), data)
    already_forgotten = sorted(set(sample_ids) & set(source.forgotten_sample_ids))
    request = ForgetRequest(
        id=str(uuid.uuid4()),
        model_name=model_name,
        source_version=source.version,
        status=RequestStatus.queued.value,
        method=method.name,
        params=params.model_dump(mode="json", by_alias=True),
        target_classes=classes,
        target_sample_ids=sample_ids,
        already_forgotten_sample_ids=already_forgotten,
        acceptance=acceptance,
        requested_by=body.requested_by,
        subject_reference=body.subject_reference,
        reason=body.reason,
        idempotency_key=idempotency_key,
        body_sha256=body_sha256,
    )
    session.add(request)
    session.flush()
    record(
        session, AuditAction.forget_request_received, actor,
        subject_reference=request.subject_reference, forget_request_id=request.id,
        model_name=model_name, model_version=source.version,
        details={
            "requested_by": body.requested_by, "method": request.method,
            "params": request.params, "classes": classes,
            "sample_id_count": len(sample_ids),
            "already_forgotten_sample_count": len(already_forgotten), "reason": body.reason,
            "acceptance": acceptance,
        },
    )
    return request


def request_body_sha256(model_name: str, body: ForgetRequestCreate) -> str:
    """Hash of the request as filed (defaults filled in), to compare idempotent retries."""
    canonical = json.dumps({"model_name": model_name, **body.model_dump(mode="json")},
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def submit_request(db: Database, model_name: str, body: ForgetRequestCreate, actor: str,
                   max_sample_ids: int, idempotency_key: str | None = None,
                   settings: Settings | None = None,
                   data: ImageData | None = None) -> tuple[ForgetRequest, bool]:
    """File a request in its own transaction; returns (request, replayed).

    With an idempotency key, a retry with the same body returns the request first filed
    under that key (replayed=True); a different body under the same key is a 409. Two
    concurrent first POSTs race on the key's unique constraint: the loser reads the
    winner's row."""
    if idempotency_key is None:
        with db.session() as session:
            return file_request(session, model_name, body, actor, max_sample_ids,
                                settings=settings, data=data), False
    digest = request_body_sha256(model_name, body)
    for _ in range(3):
        try:
            with db.write_session() as session:
                existing = session.scalar(
                    select(ForgetRequest).where(ForgetRequest.idempotency_key == idempotency_key)
                )
                if existing is not None:
                    if existing.body_sha256 != digest:
                        raise ConflictError(
                            f"Idempotency-Key {idempotency_key!r} was already used for forget "
                            f"request {existing.id} with a different body",
                            "Idempotency-Key",
                        )
                    return existing, True
                return file_request(session, model_name, body, actor, max_sample_ids,
                                    idempotency_key, digest, settings, data), False
        except IntegrityError:
            continue  # a concurrent POST with this key committed first: read it
    raise ConflictError(f"Idempotency-Key {idempotency_key!r} is contended; retry",
                        "Idempotency-Key")


def get_request(session: Session, request_id: str) -> ForgetRequest:
    request = session.get(ForgetRequest, request_id)
    if request is None:
        raise NotFoundError(f"forget request {request_id!r} does not exist", "request_id")
    return request


def list_requests(session: Session, *, limit: int, before: tuple | None = None,
                  status: str | None = None, subject_reference: str | None = None,
                  method: str | None = None, created_since: dt.datetime | None = None,
                  created_until: dt.datetime | None = None,
                  ) -> tuple[list[ForgetRequest], ForgetRequest | None]:
    """Newest first. ``before`` is the (created_at, id) of the last item of the previous page.
    ``created_since`` is inclusive, ``created_until`` exclusive."""
    statement = (
        select(ForgetRequest)
        .order_by(ForgetRequest.created_at.desc(), ForgetRequest.id.desc())
        .limit(limit + 1)
    )
    if before is not None:
        created_at, request_id = before
        statement = statement.where(
            (ForgetRequest.created_at < created_at)
            | ((ForgetRequest.created_at == created_at) & (ForgetRequest.id < request_id))
        )
    if status is not None:
        statement = statement.where(ForgetRequest.status == status)
    if subject_reference is not None:
        statement = statement.where(ForgetRequest.subject_reference == subject_reference)
    if method is not None:
        statement = statement.where(ForgetRequest.method == method)
    if created_since is not None:
        statement = statement.where(ForgetRequest.created_at >= created_since)
    if created_until is not None:
        statement = statement.where(ForgetRequest.created_at < created_until)
    rows = list(session.scalars(statement))
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1]
    return rows, None
