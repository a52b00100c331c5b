"""Prometheus metrics.

Two kinds, because API replicas and worker processes are separate processes:

- Figures that live in the database (queue depth, forget requests by method and final
  status, audit chain length, webhook outbox) are read at scrape time by
  ``DatabaseCollector``, so every API replica reports the same truth, whichever process
  did the work.
- Figures that only a process sees (HTTP traffic, predictions it served, its model
  cache, durations of the requests it ran, webhook attempts it made) are counted in that
  process. A separate ``unlearn worker`` serves its own on UNLEARN_WORKER_METRICS_PORT.

Every metric is created per ``ServiceContext`` in a registry of its own (``metrics_for``),
so that several apps in one process (tests, benchmarks) never collide.
"""

from __future__ import annotations

import logging
import threading

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

logger = logging.getLogger("unlearn.metrics")

QUEUES = ("light", "heavy")
LIGHT_METHODS = frozenset({"output_dampening"})
FINAL_STATUSES = ("completed", "unverified", "failed", "cancelled")
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


def queue_for_method(method: str) -> str:
    """The queue a method's requests wait in: 'light' for output dampening (no pass over
    the data), 'heavy' for the rest. The one place to repoint when real queues arrive."""
    return "light" if method in LIGHT_METHODS else "heavy"


class DatabaseCollector(Collector):
    """Gauges and counters read from the database when Prometheus scrapes."""

    def __init__(self, db):
        self.db = db

    def collect(self):
        from app.audit.models import AuditChainHead
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
        except Exception:
            logger.warning("metrics: database queries failed", exc_info=True)
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
            if status == "queued":
                depth[queue_for_method(method)] = depth.get(queue_for_method(method), 0) + count
            elif status == "running":
                running[queue_for_method(method)] = (running.get(queue_for_method(method), 0)
                                                     + count)
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


class ModelCacheCollector(Collector):
    """The model cache's hit and miss counts (kept as plain integers by the cache)."""

    def __init__(self, models):
        self.models = models

    def collect(self):
        yield CounterMetricFamily("unlearn_model_cache_hits",
                                  "Model lookups served from memory.", value=self.models.hits)
        yield CounterMetricFamily("unlearn_model_cache_misses",
                                  "Model lookups that read and verified an artifact.",
                                  value=self.models.misses)
        yield GaugeMetricFamily("unlearn_model_cache_models", "Models held in memory.",
                                value=len(self.models._models))


class ServiceMetrics:
    """The metrics of one service context (one process's view plus the database's)."""

    def __init__(self, ctx, with_database: bool = True):
        self.registry = CollectorRegistry()
        self.lock = threading.Lock()
        self.http_instrumentations: list | None = None  # set by app.observability.http
        self.prediction_requests = Counter(
            "unlearn_prediction_requests", "Prediction calls answered, by model and version.",
            ["model", "version"], registry=self.registry)
        self.predicted_images = Counter(
            "unlearn_predicted_images", "Images classified, by model and version.",
            ["model", "version"], registry=self.registry)
        self.forget_duration = Histogram(
            "unlearn_forget_request_duration_seconds",
            "Execution time of forget requests run by this process, by method and phase "
            "('total' = claim to final status).",
            ["method", "phase"], buckets=DURATION_BUCKETS, registry=self.registry)
        self.webhook_attempts = Counter(
            "unlearn_webhook_delivery_attempts", "Webhook delivery attempts made by this "
            "process, by outcome.", ["outcome"], registry=self.registry)
        self.registry.register(ModelCacheCollector(ctx.models))
        if with_database:
            self.registry.register(DatabaseCollector(ctx.db))


_CREATE_LOCK = threading.Lock()
_KEY = "metrics"


def metrics_for(ctx, with_database: bool = True) -> ServiceMetrics | None:
    """The context's metrics (made on first use); None when metrics are switched off."""
    if not ctx.settings.metrics_enabled:
        return None
    metrics = ctx.extras.get(_KEY)
    if metrics is None:
        with _CREATE_LOCK:
            metrics = ctx.extras.get(_KEY)
            if metrics is None:
                metrics = ctx.extras[_KEY] = ServiceMetrics(ctx, with_database)
    return metrics


def record_prediction(ctx, model_name: str, version: int, images: int) -> None:
    metrics = metrics_for(ctx)
    if metrics is not None:
        labels = (model_name, str(version))
        metrics.prediction_requests.labels(*labels).inc()
        metrics.predicted_images.labels(*labels).inc(images)


def observe_phase(ctx, method: str, phase: str, seconds: float) -> None:
    """Time spent by a forget request of ``method`` in ``phase`` (importance, dampening,
    training epoch, metrics, publishing...)."""
    metrics = metrics_for(ctx)
    if metrics is not None:
        metrics.forget_duration.labels(method, phase).observe(seconds)


def observe_request_duration(ctx, method: str, seconds: float) -> None:
    observe_phase(ctx, method, "total", seconds)


def observe_webhook_attempt(ctx, outcome: str) -> None:
    metrics = metrics_for(ctx)
    if metrics is not None:
        metrics.webhook_attempts.labels(outcome).inc()
