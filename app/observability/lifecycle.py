"""Start and stop a process's operations parts: logging, metrics, the webhook deliverer.
The API's lifespan and ``unlearn worker`` both call ``start_operations``."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.observability.logs import configure_logging
from app.observability.metrics import metrics_for

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from app.notifications.deliverer import WebhookDeliverer

logger = logging.getLogger("unlearn")


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
    metrics = metrics_for(ctx, with_database=with_database_metrics)
    if metrics is not None and metrics_port is not None:
        from prometheus_client import start_http_server

        operations.metrics_server = start_http_server(metrics_port, registry=metrics.registry)
        logger.info("worker metrics on :%d/metrics", metrics_port)
    if settings.webhook_deliverer:
        from app.notifications.deliverer import WebhookDeliverer

        operations.deliverer = WebhookDeliverer(ctx, f"deliverer:{process_id()}")
        operations.deliverer.start()
    return operations
