"""The webhook outbox: enqueue a delivery when a request reaches a final status, claim due
deliveries, attempt them, record each attempt (row + audit entry).

Enqueueing is idempotent (one delivery per request, a unique constraint), and a sweep
(``reconcile``) enqueues for any final request with a callback_url that has none yet: a
process that dies between finishing a request and enqueueing its delivery, a request
failed by lease recovery, or one cancelled elsewhere still gets its callback.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError

from app import __version__
from app.audit.service import AuditAction, record
from app.db.base import utcnow
from app.db.session import Database, rowcount
from app.forget_requests.models import ForgetRequest
from app.notifications.models import DeliveryStatus, WebhookDelivery
from app.notifications.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from app.notifications.urls import (
    CallbackRefused,
    check_for_settings,
    host_header,
    pinned_request_url,
    redacted,
)

logger = logging.getLogger("unlearn.webhooks")

# 'cancelled' arrives with the job-engine work (issue 12); listed so that its requests
# are told too.
FINAL_STATUSES = ("completed", "unverified", "failed", "cancelled")
WAKEUP_KEY = "webhook_wakeup"


def request_summary(request: ForgetRequest) -> dict:
    """What the receiver is told: the request's outcome, without the data subject's
    reference or the requester (the receiver has the request ID from filing)."""
    def iso(value: dt.datetime | None) -> str | None:
        return value.isoformat().replace("+00:00", "Z") if value else None

    return {
        "id": request.id,
        "status": request.status,
        "model_name": request.model_name,
        "source_version": request.source_version,
        "result_version": request.result_version,
        "method": request.method,
        "params": request.params,
        "classes": request.target_classes,
        "sample_id_count": len(request.target_sample_ids or []),
        "error": request.error,
        "created_at": iso(request.created_at),
        "started_at": iso(request.started_at),
        "finished_at": iso(request.finished_at),
        "links": {
            "self": f"/forget-requests/{request.id}",
            "certificate": (f"/forget-requests/{request.id}/certificate"
                            if request.status == "completed" else None),
            "result_version": (f"/models/{request.result_version}"
                               if request.result_version is not None else None),
        },
    }


def enqueue(session, request: ForgetRequest) -> WebhookDelivery | None:
    """Add the request's delivery to the outbox (in the caller's transaction), unless it
    asked for none, is not final, or has one already."""
    if not request.callback_url or request.status not in FINAL_STATUSES:
        return None
    existing = session.scalar(select(WebhookDelivery)
                              .where(WebhookDelivery.forget_request_id == request.id))
    if existing is not None:
        return existing
    delivery_id = str(uuid.uuid4())
    event = f"forget_request.{request.status}"
    payload = {"event": event, "delivery_id": delivery_id,
               "forget_request": request_summary(request)}
    delivery = WebhookDelivery(
        id=delivery_id, forget_request_id=request.id, url=request.callback_url, event=event,
        payload=json.dumps(payload, separators=(",", ":"), sort_keys=True),
        status=DeliveryStatus.pending.value, attempts=0, next_attempt_at=utcnow(),
        created_at=utcnow(),
    )
    session.add(delivery)
    session.flush()
    return delivery


def enqueue_for_request(db: Database, request_id: str) -> bool:
    """Own transaction; True when a delivery is (now) in the outbox for the request."""
    try:
        with db.session() as session:
            request = session.get(ForgetRequest, request_id)
            return request is not None and enqueue(session, request) is not None
    except IntegrityError:  # a concurrent enqueuer won: the delivery exists
        return True


def reconcile(db: Database, limit: int = 100) -> int:
    """Enqueue deliveries that final requests with a callback_url are missing."""
    with db.session() as session:
        missing = list(session.scalars(
            select(ForgetRequest.id)
            .outerjoin(WebhookDelivery, WebhookDelivery.forget_request_id == ForgetRequest.id)
            .where(ForgetRequest.callback_url.is_not(None),
                   ForgetRequest.status.in_(FINAL_STATUSES),
                   WebhookDelivery.id.is_(None))
            .limit(limit)))
    for request_id in missing:
        enqueue_for_request(db, request_id)
    return len(missing)


def due_deliveries(db: Database, limit: int = 20) -> list[str]:
    now = utcnow()
    with db.session() as session:
        return list(session.scalars(
            select(WebhookDelivery.id)
            .where(WebhookDelivery.status == DeliveryStatus.pending.value,
                   WebhookDelivery.next_attempt_at <= now,
                   or_(WebhookDelivery.locked_until.is_(None),
                       WebhookDelivery.locked_until < now))
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)))


def claim(db: Database, delivery_id: str, deliverer_id: str,
          lock_s: float) -> WebhookDelivery | None:
    """Take a due delivery for one attempt (conditional UPDATE: one claimer wins). The
    attempt is counted at the claim, so a deliverer that dies mid-attempt still uses one."""
    now = utcnow()
    with db.session() as session:
        claimed = rowcount(session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id,
                   WebhookDelivery.status == DeliveryStatus.pending.value,
                   WebhookDelivery.next_attempt_at <= now,
                   or_(WebhookDelivery.locked_until.is_(None),
                       WebhookDelivery.locked_until < now))
            .values(locked_until=now + dt.timedelta(seconds=lock_s), locked_by=deliverer_id,
                    attempts=WebhookDelivery.attempts + 1)
        ))
        if claimed != 1:
            return None
        return session.get(WebhookDelivery, delivery_id)


@dataclass(frozen=True)
class AttemptResult:
    status_code: int | None
    error: str | None
    refused: bool = False  # the URL is no longer allowed: never retried
    duration_ms: float = 0.0

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def attempt(client: httpx.Client, settings, secret: bytes,
            delivery: WebhookDelivery) -> AttemptResult:
    """One signed POST of the stored body. The URL is checked again and the connection
    goes to the address just checked; redirects are not followed."""
    started = time.perf_counter()
    try:
        target = check_for_settings(delivery.url, settings)
    except CallbackRefused as error:
        return AttemptResult(None, f"callback_url refused: {error}", refused=True)
    body = delivery.payload.encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"unlearn-service/{__version__}",
        "Host": host_header(target),
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
        "X-Unlearn-Event": delivery.event,
        "X-Unlearn-Delivery": delivery.id,
        "X-Unlearn-Attempt": str(delivery.attempts),
    }
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    try:
        response = client.post(pinned_request_url(target), content=body, headers=headers,
                               extensions=extensions, timeout=settings.webhook_timeout_s)
    except httpx.HTTPError as error:
        return AttemptResult(None, f"{type(error).__name__}: {error}"[:500],
                             duration_ms=(time.perf_counter() - started) * 1000)
    duration = (time.perf_counter() - started) * 1000
    if 200 <= response.status_code < 300:
        return AttemptResult(response.status_code, None, duration_ms=duration)
    return AttemptResult(response.status_code, f"HTTP {response.status_code}",
                         duration_ms=duration)


def backoff_s(settings, attempts: int) -> float:
    """Delay after the ``attempts``-th failed attempt: base × 2^(n-1), capped, ±10% jitter
    so that receivers coming back up are not hit by every sender at once."""
    delay = min(settings.webhook_backoff_s * 2 ** (attempts - 1), settings.webhook_backoff_max_s)
    return delay * random.uniform(0.9, 1.1)


def finish(db: Database, settings, delivery: WebhookDelivery, deliverer_id: str,
           result: AttemptResult) -> str:
    """Record the attempt on the row and in the audit log (one transaction); returns the
    outcome: delivered, retrying, gave_up or refused."""
    now = utcnow()
    values: dict[str, Any]
    if result.delivered:
        outcome, values = "delivered", {"status": DeliveryStatus.delivered.value,
                                        "delivered_at": now}
    elif result.refused:
        outcome, values = "refused", {"status": DeliveryStatus.failed.value}
    elif delivery.attempts >= settings.webhook_max_attempts:
        outcome, values = "gave_up", {"status": DeliveryStatus.failed.value}
    else:
        outcome = "retrying"
        values = {"next_attempt_at": now + dt.timedelta(seconds=backoff_s(settings,
                                                                          delivery.attempts))}
    with db.write_session() as session:
        updated = rowcount(session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery.id,
                   WebhookDelivery.locked_by == deliverer_id,
                   WebhookDelivery.status == DeliveryStatus.pending.value)
            .values(locked_until=None, locked_by=None, last_status_code=result.status_code,
                    last_error=result.error, **values)
        ))
        if updated != 1:
            # Our claim expired and another deliverer took the row: it records its own.
            outcome = "superseded"
        request = session.get(ForgetRequest, delivery.forget_request_id)
        record(
            session, AuditAction.webhook_delivery_attempted, f"webhooks:{deliverer_id}",
            subject_reference=request.subject_reference if request else None,
            forget_request_id=delivery.forget_request_id,
            model_name=request.model_name if request else None,
            model_version=(request.result_version or request.source_version) if request else None,
            details={
                "delivery_id": delivery.id, "event": delivery.event,
                "url": redacted(delivery.url), "attempt": delivery.attempts,
                "max_attempts": settings.webhook_max_attempts, "outcome": outcome,
                "status_code": result.status_code, "error": result.error,
                "duration_ms": round(result.duration_ms, 1),
                "next_attempt_at": (values["next_attempt_at"].isoformat()
                                    if "next_attempt_at" in values else None),
            },
        )
    return outcome


def notify_final_status(ctx, request_id: str, worker_id: str | None = None) -> None:
    """Call where a forget request reaches a final status (after its transaction commits).

    Observes the request's duration (once: only from the worker that ran it), enqueues its
    webhook delivery and wakes this process's deliverer. Never raises: a failure here must
    not touch the request, and the deliverer's sweep enqueues anything missed."""
    from app.observability.metrics import observe_request_duration

    try:
        with ctx.db.session() as session:
            request = session.get(ForgetRequest, request_id)
            if request is None or request.status not in FINAL_STATUSES:
                return
            ran_here = worker_id is None or request.worker_id == worker_id
            duration = ((request.finished_at - request.started_at).total_seconds()
                        if request.started_at and request.finished_at else None)
            if ran_here:
                if duration is not None:
                    observe_request_duration(ctx, request.method, duration)
                logging.getLogger("unlearn.worker").info(
                    "forget request %s", request.status,
                    extra={"forget_request_id": request.id, "method": request.method,
                           "status": request.status, "duration_s": duration,
                           "result_version": request.result_version})
            if not request.callback_url:
                return
        if enqueue_for_request(ctx.db, request_id):
            wakeup = ctx.extras.get(WAKEUP_KEY)
            if wakeup is not None:
                wakeup.set()
    except Exception:
        logger.exception("could not enqueue the webhook of forget request %s", request_id)
