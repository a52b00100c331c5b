"""The FastAPI application: routers from each domain package, one error shape, and the
embedded worker thread started and stopped with the app."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI

from app import __version__
from app.api.docs_pages import install_docs_pages
from app.api.errors import ERROR_RESPONSES, install_error_handlers
from app.api.limits import BodySizeLimitMiddleware
from app.api.security_headers import SecurityHeadersMiddleware
from app.audit.checkpoints import CheckpointWriter, checkpoint_store, write_checkpoint
from app.api.routes.audit import router as audit_router
from app.api.routes.auth import router as auth_router
from app.auth.service import announce_bootstrap_key, ensure_security
from app.auth.throttle import Throttle
from app.api.routes.certificates import router as certificates_router
from app.core.signing import get_signer
from app.console.routes import mount_console
from app.core.config import get_settings
from app.context import ServiceContext
from app.wiring import build_context
from app.api.routes.datasets import router as datasets_router
from app.api.routes.forgetting import router as forgetting_router
from app.forget_requests.finished import FinishedListener
from app.forgetting.waiting import WaitSlots
from app.forgetting.worker import InProcessExecutor, Notifier
from app.health.probe import ReadinessProbe
from app.health.routes import router as health_router
from app.api.observability import install_observability
from app.operations import start_operations
from app.api.routes.prediction import router as prediction_router
from app.api.routes.prediction_v2 import router as inference_protocol_router
from app.api.routes.registry import router as registry_router
from app.subjects.logs import redact_subject_paths
from app.subjects.purge import PurgeScheduler
from app.api.routes.subjects import router as subjects_router

if TYPE_CHECKING:
    from app.forgetting.jobs import JobWorker  # imported when used (procrastinate's cost)

logger = logging.getLogger("unlearn")

DESCRIPTION = """
Unlearning as a service. File GDPR erasure ("right to be forgotten") requests against a
hosted CNN; each request yields a new immutable model version with recorded lineage and
before/after metrics, and every step lands in the audit log.
"""


def start_embedded_worker(ctx: ServiceContext, filed: Notifier, finished: Notifier):
    """SQLite: the in-process executor (it requeues what a previous run left 'running').
    PostgreSQL: a procrastinate worker for all queues on a thread of this process."""
    worker: JobWorker | InProcessExecutor
    if ctx.settings.uses_job_engine:
        from app.forgetting.jobs import JobWorker

        worker = JobWorker(ctx, on_finished=finished.notify)
    else:
        worker = InProcessExecutor(ctx, filed, poll_interval=1.0)
        worker.done = finished
    worker.start()
    return worker


def create_app(ctx: ServiceContext | None = None, start_worker: bool | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        context = ctx or build_context(get_settings())
        app.state.ctx = context
        app.state.notifier = Notifier()
        app.state.wait_slots = WaitSlots(context.settings.max_waits_per_key)
        app.state.readiness = ReadinessProbe(context.db.url,
                                             context.settings.readiness_timeout_s)
        announce_bootstrap_key(ensure_security(context))  # signing key, first admin key
        # Logging is configured for the served app only; tests pass their own context.
        operations = start_operations(context, configure_logs=ctx is None)
        run_worker = context.settings.embedded_worker if start_worker is None else start_worker
        app.state.worker_done = Notifier()
        worker = None
        if run_worker:
            worker = start_embedded_worker(context, app.state.notifier, app.state.worker_done)
        app.state.worker = worker
        finish_listener = None
        if context.settings.uses_job_engine:  # PostgreSQL: workers in other processes
            finish_listener = FinishedListener(
                context.db.url, lambda _request_id: app.state.worker_done.notify()).start()
        checkpoints = CheckpointWriter(context.db, get_signer(context),
                                       checkpoint_store(context),
                                       context.settings.audit_checkpoint_interval_s)
        try:
            write_checkpoint(context.db, get_signer(context), checkpoint_store(context))
        except Exception as error:  # not migrated yet, or the store unreachable
            logger.warning("no audit checkpoint at start: %s", error)
        if context.settings.audit_checkpoint_interval_s > 0:
            checkpoints.start()
        purge = None
        if run_worker and context.settings.purge_superseded_after_days is not None:
            purge = PurgeScheduler(context)  # UNLEARN_PURGE_SUPERSEDED_AFTER_DAYS
            purge.start()
        try:
            yield
        finally:
            if purge is not None:
                purge.stop()
            if worker is not None:
                worker.stop()
            if finish_listener is not None:
                finish_listener.stop()
            operations.stop()
            checkpoints.stop()
            body_parser = getattr(app.state, "body_parser", None)
            if body_parser is not None:  # the processes that parse large bodies
                body_parser.close()
                app.state.body_parser = None
            app.state.readiness.close()
            if ctx is None:
                context.close()

    # /docs and /redoc are served with their assets from this origin (no CDN).
    app = FastAPI(title="Unlearning service", version=__version__, description=DESCRIPTION,
                  lifespan=lifespan, docs_url=None, redoc_url=None)
    install_docs_pages(app)
    install_error_handlers(app)
    for router in (forgetting_router, registry_router, prediction_router, audit_router,
                   health_router, inference_protocol_router):
        app.include_router(router, responses=ERROR_RESPONSES)
    # Security: key management, certificates, body size and NUL limits.
    for router in (auth_router, certificates_router):
        app.include_router(router, responses=ERROR_RESPONSES)
    settings = ctx.settings if ctx else get_settings()
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(SecurityHeadersMiddleware)  # also on 413s and errors of any layer
    install_observability(app, settings)  # request IDs, access log, HTTP metrics, /metrics
    # Registered datasets.
    app.include_router(datasets_router, responses=ERROR_RESPONSES)
    app.state.throttle = Throttle(settings.auth_failures_per_address,
                                  settings.auth_failures_per_key_prefix)
    # Data subjects (issue 10): footprints; access logs never show their identifiers.
    app.include_router(subjects_router, responses=ERROR_RESPONSES)
    redact_subject_paths()
    mount_console(app)  # the review console's pages under /console
    return app
