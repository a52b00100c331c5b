"""Start and stop a process's operations parts: logging, metrics, the webhook deliverer.
The API's lifespan and ``unlearn worker`` both call ``start_operations``. Beside it, the
metrics read from the database (``DatabaseCollector``): they read the flows' tables, so
they sit here in the wiring layer, above the flows (docs/reference.md, "Layers")."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from app.forget_requests.models import FINAL_STATUSES, RequestStatus
from app.observability.logs import configure_logging
from app.observability.metrics import ServiceMetrics, metrics_for
from app.unlearning.base import HEAVY_QUEUE, LIGHT_QUEUE
from app.unlearning.catalog import get_method

logger = logging.getLogger("unlearn")
metrics_logger = logging.getLogger("unlearn.metrics")

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from app.notifications.deliverer import WebhookDeliverer


@dataclass
class Operations:
    deliverer: WebhookDeliverer | None = None
    # prometheus_client.start_http_server's (server, thread)
    metrics_server: tuple[WSGIServer, threading.Thread] | None = None

    def stop(self) -> None:
        if self.deliverer is not None:
            self.deliverer.stop()
            self.deliverer = None
        if self.metrics_server is not None:
            server, thread = self.metrics_server
            server.shutdown()
            thread.join(5)
            self.metrics_server = None


def process_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def start_operations(ctx, configure_logs: bool = True, *, with_database_metrics: bool = True,
                     metrics_port: int | None = None) -> Operations:
    """``with_database_metrics``: the API reports the database's figures; a separate
    worker process leaves them to the API (no double counting across scrape targets) and
    serves its own metrics on ``metrics_port``."""
    settings = ctx.settings
    if configure_logs:
        configure_logging(settings.log_level, settings.log_format)
    operations = Operations()
    metrics = metrics_for(ctx)
    if metrics is not None and with_database_metrics:
        report_database_figures(metrics, ctx.db)
    if metrics is not None and metrics_port is not None:
        from prometheus_client import start_http_server

        operations.metrics_server = start_http_server(metrics_port, registry=metrics.registry)
        logger.info("worker metrics on :%d/metrics", metrics_port)
    if settings.webhook_deliverer:
        from app.notifications.deliverer import WebhookDeliverer

        operations.deliverer = WebhookDeliverer(ctx, f"deliverer:{process_id()}")
        operations.deliverer.start()
    return operations


QUEUES = (LIGHT_QUEUE, HEAVY_QUEUE)


def queue_for_method(method: str) -> str:
    """The queue a method's requests wait in: the method's own ``queue`` (what filing
    stores on the request), 'heavy' for a name no longer offered."""
    found = get_method(method)
    return found.queue if found is not None else HEAVY_QUEUE


class DatabaseCollector(Collector):
    """Gauges and counters read from the database when Prometheus scrapes."""

    def __init__(self, db):
        self.db = db

    def collect(self):
        from app.audit.models import AuditChainHead
        from app.forgetting.jobs import job_counts
        from app.forget_requests.models import ForgetRequest
        from app.notifications.models import WebhookDelivery

        up = GaugeMetricFamily("unlearn_metrics_database_up",
                               "1 if the scrape-time database queries succeeded.")
        try:
            with self.db.session() as session:
                by_status = session.execute(
                    select(ForgetRequest.method, ForgetRequest.status, func.count())
                    .group_by(ForgetRequest.method, ForgetRequest.status)).all()
                chain = session.scalar(select(AuditChainHead.seq)
                                       .where(AuditChainHead.id == 1))
                outbox = session.execute(
                    select(WebhookDelivery.status, func.count())
                    .group_by(WebhookDelivery.status)).all()
                jobs = job_counts(session)
        except Exception:
            metrics_logger.warning("metrics: database queries failed", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up

        depth = dict.fromkeys(QUEUES, 0)
        running = dict.fromkeys(QUEUES, 0)
        finals = CounterMetricFamily(
            "unlearn_forget_requests", "Forget requests that reached a final status.",
            labels=["method", "status"])
        for method, status, count in by_status:
            if status == RequestStatus.queued.value:
                depth[queue_for_method(method)] += count
            elif status == RequestStatus.running.value:
                running[queue_for_method(method)] += count
            elif status in FINAL_STATUSES:
                finals.add_metric([method, status], count)
        queue = GaugeMetricFamily("unlearn_queue_depth",
                                  "Forget requests waiting (status queued), by queue.",
                                  labels=["queue"])
        for name, count in depth.items():
            queue.add_metric([name], count)
        in_progress = GaugeMetricFamily("unlearn_forget_requests_running",
                                        "Forget requests being executed, by queue.",
                                        labels=["queue"])
        for name, count in running.items():
            in_progress.add_metric([name], count)
        yield queue
        yield in_progress
        yield finals
        yield GaugeMetricFamily("unlearn_audit_chain_length",
                                "Entries in the hash-chained audit log (the head's seq).",
                                value=chain or 0)
        deliveries = GaugeMetricFamily("unlearn_webhook_deliveries",
                                       "Webhook deliveries in the outbox, by status.",
                                       labels=["status"])
        counts = {"pending": 0, "delivered": 0, "failed": 0, **dict(outbox)}
        for status, count in counts.items():
            deliveries.add_metric([status], count)
        yield deliveries
        if jobs:  # PostgreSQL: the job engine's own table, the maintenance queue's too
            job_family = GaugeMetricFamily(
                "unlearn_jobs", "Job engine jobs by queue and status (finished ones until "
                "UNLEARN_JOB_RETENTION_HOURS removes them).", labels=["queue", "status"])
            for (queue_name, status), count in sorted(jobs.items()):
                job_family.add_metric([queue_name, status], count)
            yield job_family


def report_database_figures(metrics: ServiceMetrics, db) -> None:
    """Add the database's figures to a context's metrics (once per context)."""
    with metrics.lock:
        if metrics.database_collector is None:
            metrics.database_collector = DatabaseCollector(db)
            metrics.registry.register(metrics.database_collector)
