"""The FastAPI application: routers from each domain package, one error shape, and the
embedded worker thread started and stopped with the app."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import __version__
from app.api.errors import ERROR_RESPONSES, install_error_handlers
from app.api.limits import BodySizeLimitMiddleware
from app.audit.routes import router as audit_router
from app.auth.routes import router as auth_router
from app.auth.service import announce_bootstrap_key, ensure_security
from app.certificates.routes import router as certificates_router
from app.console.routes import mount_console
from app.core.config import get_settings
from app.core.context import ServiceContext, build_context
from app.datasets.routes import router as datasets_router
from app.forgetting.routes import router as forgetting_router
from app.forgetting.worker import Notifier, Worker
from app.health.routes import router as health_router
from app.prediction.routes import router as prediction_router
from app.registry.routes import router as registry_router
from app.subjects.logs import redact_subject_paths
from app.subjects.purge import PurgeScheduler
from app.subjects.routes import router as subjects_router

logger = logging.getLogger("unlearn")

DESCRIPTION = """
Unlearning as a service. File GDPR erasure ("right to be forgotten") requests against a
hosted CNN; each request yields a new immutable model version with recorded lineage and
before/after metrics, and every step lands in the audit log.
"""


def create_app(ctx: ServiceContext | None = None, start_worker: bool | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        context = ctx or build_context(get_settings())
        app.state.ctx = context
        app.state.notifier = Notifier()
        announce_bootstrap_key(ensure_security(context))  # signing key, first admin key
        run_worker = context.settings.embedded_worker if start_worker is None else start_worker
        worker = None
        if run_worker:
            # Requests left 'running' by a process that died are requeued by the worker
            # once their lease expires (UNLEARN_LEASE_S), as with any vanished worker.
            worker = Worker(context, app.state.notifier, poll_interval=1.0)
            app.state.worker_done = worker.done
            worker.start()
        else:
            app.state.worker_done = Notifier()
        app.state.worker = worker
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
            if ctx is None:
                context.close()

    app = FastAPI(title="Unlearning service", version=__version__, description=DESCRIPTION,
                  lifespan=lifespan)
    install_error_handlers(app)
    for router in (forgetting_router, registry_router, prediction_router, audit_router,
                   health_router):
        app.include_router(router, responses=ERROR_RESPONSES)
    # Security: key management, certificates, body size and NUL limits.
    for router in (auth_router, certificates_router):
        app.include_router(router, responses=ERROR_RESPONSES)
    app.add_middleware(BodySizeLimitMiddleware,
                       max_bytes=(ctx.settings if ctx else get_settings()).max_body_bytes)
    # Registered datasets (issue 9).
    app.include_router(datasets_router, responses=ERROR_RESPONSES)
    # Data subjects (issue 10): footprints; access logs never show their identifiers.
    app.include_router(subjects_router, responses=ERROR_RESPONSES)
    redact_subject_paths()
    mount_console(app)  # the review console's pages under /console
    return app
