"""The webhook outbox: one row per forget request that asked for a callback."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, UtcDateTime, utcnow


class DeliveryStatus(str, enum.Enum):
    pending = "pending"  # waiting for its next attempt (or being attempted now)
    delivered = "delivered"  # the receiver answered 2xx
    failed = "failed"  # gave up: attempts exhausted, or the URL is no longer allowed


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # One delivery per request: the unique constraint makes enqueueing idempotent, so the
    # worker's call and the reconciler's sweep can never send two.
    forget_request_id: Mapped[str] = mapped_column(String(36), unique=True)
    url: Mapped[str] = mapped_column(Text)
    event: Mapped[str] = mapped_column(String(64))
    # The exact body of every attempt (the signature covers these bytes).
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.pending.value,
                                        index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    # A deliverer's claim on the row while it sends; a claim that outlives its process
    # expires, and the row is attempted again.
    locked_until: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
    locked_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, nullable=True)
