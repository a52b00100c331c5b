"""Filing, reading and listing forget requests."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

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
from app.db.base import utcnow
from app.forgetting import jobs
from app.forget_requests.models import FINAL_STATUSES, ForgetRequest, RequestStatus
from app.forgetting.schemas import ForgetRequestCreate
from app.forgetting.transitions import transition
from app.ml.data import ImageData
from app.core.config import Settings, get_settings
from app.db.session import Database
from app.registry.service import resolve_version
from app.unlearning.base import ForgetTarget, MethodParams, UnlearningMethod
from app.unlearning.catalog import METHODS, get_method
from app.verification.criteria import resolve_acceptance

if TYPE_CHECKING:
    from app.subjects.resolution import ResolvedSubjects


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


@dataclass(frozen=True)
class ResolvedTarget:
    """A request's target in the dataset's terms: class indices and training IDs, with
    the names the request used for them."""

    classes: list[int]
    class_names: list[str]
    sample_ids: list[int]
    sample_keys: list[str] | None  # the dataset's own IDs, None where they are the integers


def resolve_target(method: UnlearningMethod, data: ImageData, classes: list[int | str],
                   sample_ids: list[int | str], max_sample_ids: int) -> ResolvedTarget:
    """Check the target against the method's abilities and the model's dataset: classes by
    index or name, samples by the dataset's own IDs; duplicates collapse."""
    if not classes and not sample_ids:
        raise InvalidInputError("the request forgets nothing: give classes, sample_ids or "
                                "subject_ids",
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
    class_indices = sorted({_class_index(data, label, position)
                            for position, label in enumerate(classes)})
    ids = sorted({_sample_index(data, sample_id, position)
                  for position, sample_id in enumerate(sample_ids)})
    return ResolvedTarget(
        classes=class_indices,
        class_names=[data.class_names[c] for c in class_indices],
        sample_ids=ids,
        sample_keys=[data.key_of(i) for i in ids] if data.sample_keys is not None else None,
    )


def _class_index(data: ImageData, label: int | str, position: int) -> int:
    field = f"classes[{position}]"
    if isinstance(label, int):
        if not 0 <= label < data.num_classes:
            raise InvalidInputError(
                f"{field} = {label} is not a class index of this model's dataset "
                f"(0-{data.num_classes - 1})", field)
        return label
    if label in data.class_names:
        return data.class_names.index(label)
    shown = ", ".join(repr(name) for name in data.class_names[:20])
    more = ", ..." if data.num_classes > 20 else ""
    raise InvalidInputError(f"{field} = {label!r} is not a class of this model's dataset "
                            f"({shown}{more})", field)


def _sample_index(data: ImageData, sample_id: int | str, position: int) -> int:
    field = f"sample_ids[{position}]"
    if data.sample_keys is None and isinstance(sample_id, int):
        if not 0 <= sample_id < data.train_id_count:
            raise InvalidInputError(
                f"{field} = {sample_id} is not a training-split index "
                f"(0-{data.train_id_count - 1})", field)
        return sample_id
    found = data.id_of_key(str(sample_id))
    if found is None:
        raise InvalidInputError(
            f"{field} = {sample_id!r} is not a training sample of this model's dataset", field)
    return found


def file_request(session: Session, model_name: str, body: ForgetRequestCreate, actor: str,
                 max_sample_ids: int, idempotency_key: str | None = None,
                 body_sha256: str | None = None, settings: Settings | None = None, *,
                 data: ImageData, subjects: "ResolvedSubjects | None" = None) -> ForgetRequest:
    """Validate a request completely, then queue it with its audit entry and, on
    PostgreSQL, its procrastinate job (one transaction). ``data`` is the model's dataset,
    against which classes and sample IDs are resolved; ``subjects`` the request's
    subject_ids, already resolved to training IDs; ``settings`` give the default
    acceptance criteria (the process's settings when None)."""
    method, params = validate_method_params(body.method, body.params)
    subject_samples: list[int | str] = []
    if subjects is not None:
        if not method.supports_samples:
            raise InvalidInputError(
                f"method {method.name!r} forgets whole classes only; choose a method that "
                f"forgets individual samples for subject_ids", "subject_ids")
        subject_samples = [data.key_of(i) if data.sample_keys is not None else i
                           for i in subjects.sample_ids]
    target = resolve_target(method, data, body.classes, [*body.sample_ids, *subject_samples],
                            max_sample_ids)
    classes, sample_ids = target.classes, target.sample_ids
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
        target_class_names=target.class_names,
        target_sample_ids=sample_ids,
        target_sample_keys=target.sample_keys,
        already_forgotten_sample_ids=already_forgotten,
        acceptance=acceptance,
        requested_by=body.requested_by,
        subject_reference=body.subject_reference,
        reason=body.reason,
        idempotency_key=idempotency_key,
        body_sha256=body_sha256,
        callback_url=body.callback_url,
        queue=method.queue,
        target_subject_hashes=subjects.hashes if subjects is not None else None,
        subject_sample_count=len(subjects.sample_ids) if subjects is not None else None,
        promote=body.promote,
    )
    session.add(request)
    session.flush()
    if jobs.uses_job_engine(session):
        jobs.defer_in_transaction(session, request)
    record(
        session, AuditAction.forget_request_received, actor,
        subject_reference=request.subject_reference, forget_request_id=request.id,
        model_name=model_name, model_version=source.version,
        details={
            "requested_by": body.requested_by, "method": request.method,
            "params": request.params, "classes": classes,
            "class_names": target.class_names,
            "sample_id_count": len(sample_ids),
            "already_forgotten_sample_count": len(already_forgotten), "reason": body.reason,
            "queue": request.queue,
            "acceptance": acceptance,
            **({"subject_hashes": subjects.hashes,
                "subject_sample_count": len(subjects.sample_ids)} if subjects else {}),
            **({"promote": True} if body.promote else {}),
        },
    )
    return request


def cancel_request(db: Database, request_id: str, actor: str) -> ForgetRequest:
    """Cancel a queued or running request: it ends 'cancelled' and publishes nothing.

    The status change is the cancellation: a running execution finds the row no longer
    held at its next checkpoint (or at publication) and stops. On PostgreSQL the job is
    cancelled (queued) or flagged for abortion (running) in the same transaction."""
    with db.write_session() as session:
        request = session.scalar(select(ForgetRequest).where(ForgetRequest.id == request_id)
                                 .with_for_update())
        if request is None:
            raise NotFoundError(f"forget request {request_id!r} does not exist", "request_id")
        if request.status in FINAL_STATUSES:
            raise ConflictError(
                f"forget request {request_id} is already {request.status}; only queued or "
                f"running requests can be cancelled", "request_id")
        details = {"previous_status": request.status, "worker": request.worker_id,
                   "phase": request.phase, "attempts": request.attempts}
        cancelled = transition(
            session, request.id, source=RequestStatus(request.status),
            target=RequestStatus.cancelled, actor=actor,
            action=AuditAction.forget_request_cancelled,
            values={"finished_at": utcnow(), "worker_id": None}, details=details)
        assert cancelled is not None  # the row is locked and was not final
        if cancelled.job_id is not None and jobs.uses_job_engine(session):
            jobs.cancel_job_in_transaction(session, cancelled.job_id)
        return cancelled


def request_body_sha256(model_name: str, body: ForgetRequestCreate) -> str:
    """Hash of the request as filed (defaults filled in), to compare idempotent retries."""
    # Without a callback_url the hash is the one filed before callbacks existed.
    fields = body.model_dump(mode="json", exclude={"callback_url"} if body.callback_url is None
                             else set())
    canonical = json.dumps({"model_name": model_name, **fields},
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def submit_request(db: Database, model_name: str, body: ForgetRequestCreate, actor: str,
                   max_sample_ids: int, idempotency_key: str | None = None,
                   settings: Settings | None = None, *,
                   data: ImageData, subjects: "ResolvedSubjects | None" = None,
                   ) -> tuple[ForgetRequest, bool]:
    """File a request in its own transaction; returns (request, replayed).

    With an idempotency key, a retry with the same body returns the request first filed
    under that key (replayed=True); a different body under the same key is a 409. Two
    concurrent first POSTs race on the key's unique constraint: the loser reads the
    winner's row."""
    if idempotency_key is None:
        with db.session() as session:
            return file_request(session, model_name, body, actor, max_sample_ids,
                                settings=settings, data=data, subjects=subjects), False
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
                                    idempotency_key, digest, settings, data=data,
                                    subjects=subjects), False
        except IntegrityError:
            continue  # a concurrent POST with this key committed first: read it
    raise ConflictError(f"Idempotency-Key {idempotency_key!r} is contended; retry",
                        "Idempotency-Key")


def list_requests(session: Session, *, limit: int, before: tuple | None = None,
                  status: str | None = None, subject_reference: str | None = None,
                  method: str | None = None, model_name: str | None = None,
                  created_since: dt.datetime | None = None,
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
    if model_name is not None:
        statement = statement.where(ForgetRequest.model_name == model_name)
    if created_since is not None:
        statement = statement.where(ForgetRequest.created_at >= created_since)
    if created_until is not None:
        statement = statement.where(ForgetRequest.created_at < created_until)
    rows = list(session.scalars(statement))
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1]
    return rows, None
