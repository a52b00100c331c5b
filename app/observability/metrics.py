"""Prometheus metrics.

Two kinds, because API replicas and worker processes are separate processes:

- Figures that live in the database (queue depth, forget requests by method and final
  status, audit chain length, webhook outbox) are read at scrape time by
  ``app.operations.DatabaseCollector`` (which the API's ``start_operations`` registers:
  it reads the flows' tables, so it lives above them), so every API replica reports the
  same truth, whichever process did the work.
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

logger = logging.getLogger("unlearn.metrics")

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


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

    def __init__(self, ctx):
        self.registry = CollectorRegistry()
        self.lock = threading.Lock()
        self.http_instrumentations: list | None = None  # set by app.api.observability
        self.database_collector: Collector | None = None  # set by app.operations
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


_CREATE_LOCK = threading.Lock()
_KEY = "metrics"


def metrics_for(ctx) -> ServiceMetrics | None:
    """The context's metrics (made on first use); None when metrics are switched off."""
    if not ctx.settings.metrics_enabled:
        return None
    metrics = ctx.extras.get(_KEY)
    if metrics is None:
        with _CREATE_LOCK:
            metrics = ctx.extras.get(_KEY)
            if metrics is None:
                metrics = ctx.extras[_KEY] = ServiceMetrics(ctx)
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
