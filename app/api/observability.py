"""HTTP side of operations: the request-ID / access-log middleware, the Prometheus HTTP
instrumentation, and ``GET /metrics``."""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid

from cachetools import LRUCache

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_fastapi_instrumentator import metrics as http_metrics
from prometheus_fastapi_instrumentator.middleware import PrometheusInstrumentatorMiddleware
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request as StarletteRequest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability.logs import log_context
from app.observability.metrics import metrics_for

REQUEST_ID_HEADER = "X-Request-ID"
# An incoming ID is kept only if it is short and plain (it lands in every log line and in
# the response header): anything else is replaced by a fresh one.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
HTTP_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5,
                        10, 30, 60, 120)

access_logger = logging.getLogger("unlearn.http")


class RequestContextMiddleware:
    """Accepts or issues ``X-Request-ID``, binds it to every log line of the request,
    returns it on the response, and logs one access line (method, route template, status,
    duration; never the query string, which may hold a subject reference)."""

    def __init__(self, app: ASGIApp, access_log: bool = True):
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = (incoming if incoming and _VALID_REQUEST_ID.match(incoming)
                      else uuid.uuid4().hex)
        header = (b"x-request-id", request_id.encode())
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        with log_context(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                if self.access_log:
                    route = scope.get("route")
                    path = getattr(route, "path", None) or scope.get("path", "")
                    duration_ms = round((time.perf_counter() - started) * 1000, 2)
                    access_logger.info(
                        "%s %s %s %.1f ms", scope.get("method"), path, status, duration_ms,
                        extra={"http_method": scope.get("method"), "route": path,
                               "status": status, "duration_ms": duration_ms})


def _metrics_router() -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/metrics", response_class=Response,
                responses={200: {"content": {"text/plain": {}},
                                 "description": "Prometheus text exposition format"}})
    async def metrics(request: Request) -> Response:
        """Prometheus metrics (see docs/operations.md). Public unless
        UNLEARN_METRICS_REQUIRE_KEY is set; then it needs an auditor (or admin) key."""
        ctx = request.app.state.ctx
        if ctx.settings.metrics_require_key:
            await _check_key(request)
        metrics = metrics_for(ctx)
        assert metrics is not None  # this router is installed only with metrics enabled
        registry = metrics.registry
        # The database collector queries: keep them off the event loop.
        body = await run_in_threadpool(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return router


async def _check_key(request: Request) -> None:
    """An auditor (or admin) key: checked as the prediction routes check theirs (a route
    that checks the key itself; the key's database read off the event loop)."""
    from app.auth.deps import bearer_scheme, require_in_route
    from app.auth.service import Role

    key = await require_in_route(Role.auditor)(request, await bearer_scheme(request))
    await run_in_threadpool(key.principal)


def install_observability(app: FastAPI, settings) -> None:
    """Add the HTTP instrumentation and /metrics (when metrics are enabled) and the
    request-context middleware (outermost, so every answer carries a request ID)."""
    if settings.metrics_enabled:
        app.include_router(_metrics_router())
        app.add_middleware(_ContextInstrumentation)
    app.add_middleware(RequestContextMiddleware, access_log=settings.access_log)


class _ContextInstrumentation:
    """prometheus-fastapi-instrumentator's middleware (requests by route template, method
    and exact status; latency histograms), bound on the first request to the registry of
    the app's service context, which exists only once the app has started."""

    def __init__(self, app: ASGIApp):
        self.app = app
        self._inner: ASGIApp | None = None

    def _build(self, scope: Scope) -> ASGIApp:
        metrics = metrics_for(scope["app"].state.ctx)
        assert metrics is not None  # installed only with metrics enabled
        registry = metrics.registry
        with metrics.lock:
            # Made once per context: several apps over one context (tests) share them, as
            # the library would otherwise refuse the second registration of a name.
            if metrics.http_instrumentations is None:
                metrics.http_instrumentations = [
                    http_metrics.requests(registry=registry),
                    http_metrics.latency(buckets=HTTP_LATENCY_BUCKETS, registry=registry),
                ]
        return _KeptHandlerInstrumentator(
            self.app,
            should_group_status_codes=False,
            should_ignore_untemplated=False,
            should_group_untemplated=True,
            should_round_latency_decimals=False,
            should_respect_env_var=False,
            should_instrument_requests_inprogress=False,
            excluded_handlers=["^/metrics$"],
            instrumentations=metrics.http_instrumentations,
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._inner is None:
            self._inner = self._build(scope)
        await self._inner(scope, receive, send)


# Route templates kept per (method, root path, path); paths longer than this are matched
# each time rather than kept (a client choosing paths cannot make the cache large).
HANDLERS_KEPT = 4096
HANDLER_PATH_KEPT_CHARS = 512


class _KeptHandlerInstrumentator(PrometheusInstrumentatorMiddleware):
    """The library's middleware, with the route template of each path kept: it otherwise
    matches the path against every route of the app (the console's included) on every
    request, about a third of a millisecond on the prediction path. The routes are fixed
    once the app is made, so a path's template and whether it is templated never change."""

    def __init__(self, app: ASGIApp, **kwargs):
        super().__init__(app, **kwargs)
        self._handlers: LRUCache[tuple[str, str, str], tuple[str, bool]] = LRUCache(
            maxsize=HANDLERS_KEPT)
        self._handlers_lock = threading.Lock()  # LRUCache is not thread-safe

    def _get_handler(self, request: StarletteRequest) -> tuple[str, bool]:
        scope = request.scope
        path = scope.get("path", "")
        if len(path) > HANDLER_PATH_KEPT_CHARS:
            return super()._get_handler(request)
        key = (scope.get("method", ""), scope.get("root_path", ""), path)
        with self._handlers_lock:
            kept = self._handlers.get(key)
        if kept is None:
            kept = super()._get_handler(request)
            with self._handlers_lock:
                self._handlers[key] = kept
        return kept
