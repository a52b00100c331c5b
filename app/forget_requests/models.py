from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, UtcDateTime, utcnow


class RequestStatus(str, enum.Enum):
    queued = "queued"
    running = "running"
    completed = "completed"
    # Finished, but the new version did not meet its acceptance criteria (or evidence for
    # one was missing): stored for inspection, never promoted, no certificate.
    unverified = "unverified"
    failed = "failed"
    cancelled = "cancelled"


FINAL_STATUSES = frozenset({RequestStatus.completed.value, RequestStatus.unverified.value,
                            RequestStatus.failed.value, RequestStatus.cancelled.value})


class ForgetRequest(Base):
    __tablename__ = "forget_requests"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    model_name: Mapped[str] = mapped_column(String(100), index=True)
    source_version: Mapped[int] = mapped_column(Integer)
    result_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=RequestStatus.queued.value, index=True)
    method: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    target_classes: Mapped[list[int]] = mapped_column(JSON, default=list)
    target_sample_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    # The dataset's own sample IDs of target_sample_ids, in the same order (None where the
    # dataset's IDs are the integers themselves, as MNIST's are).
    target_sample_keys: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    # Names of target_classes in the dataset's class list (None on rows filed before 0006).
    target_class_names: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    # Requested IDs that the source version's lineage had already forgotten (reported,
    # and counted once in the new version's cumulative set). NULL on rows filed before 0004.
    already_forgotten_sample_ids: Mapped[list[int] | None] = mapped_column(JSON, nullable=True)
    # The acceptance thresholds resolved at filing time, and the verification of the new
    # version against them (criteria, membership evidence, calibration). NULL before 0010.
    acceptance: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    verification: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    requested_by: Mapped[str] = mapped_column(String(200))
    subject_reference: Mapped[str] = mapped_column(String(200), index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # What the running execution is doing ('importance', 'training epoch 2/3', 'metrics',
    # 'publishing', ...) and how far it is within that phase (0..1).
    phase: Mapped[str | None] = mapped_column(String(64), nullable=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    started_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # Which job queue runs it ('light': output-layer only; 'heavy': passes over the data),
    # and on PostgreSQL the procrastinate job that delivers it. The row, not the job, is
    # the source of truth: the job only says "run this request now".
    queue: Mapped[str] = mapped_column(String(32), default="heavy")
    job_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Last time the execution holding it wrote progress.
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # Idempotency-Key header of the POST that filed it, and the hash of that POST's body.
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True, unique=True)
    body_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Told (signed POST) when the request reaches a final status: app/notifications.
    callback_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Data subjects (issue 10): keyed hashes (HMAC-SHA256) of the subjects the request
    # named, never the identifiers themselves, and how many training samples they owned.
    target_subject_hashes: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    subject_sample_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Promote the result when production still holds the data this request erases.
    promote: Mapped[bool] = mapped_column(Boolean, default=False)
    # Set at completion: the production version that still held the erased data then
    # (None: production no longer held it, or it was promoted away automatically).
    production_left_superseded: Mapped[int | None] = mapped_column(Integer, nullable=True)
