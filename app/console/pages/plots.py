"""The plots (PNG) of a version, a request and an α sweep."""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.responses import (
    Response,
)

from app.console import auth, plots, views
from app.console.state import console_state
from app.console.sweep import alpha_sweep, parse_alphas
from app.console.web import (
    VersionNumber,
    data_router,
    model_name_of,
    page_router,
    png_response,
    service_context,
)
from app.core.errors import NotFoundError
from app.forget_requests.models import RequestStatus
from app.forget_requests.service import get_request
from app.registry import service as registry_service

pages = page_router()
data = data_router()


@data.get("/plots/versions/{version}/{kind}.png")
def version_plot(request: Request,
                 access: Annotated[auth.Session, Depends(auth.page("version_metrics"))],
                 version: VersionNumber, kind: str) -> Response:
    ctx = service_context(request)
    with ctx.db.session() as session:
        row = registry_service.get_version(session, model_name_of(request), version)
    test = (row.metrics or {}).get("test")
    if test is None or kind not in ("per-class", "confusion"):
        raise NotFoundError(f"no {kind} plot for version {version}")
    key = f"version-{row.version}-{row.artifact_sha256[:24]}-{kind}"
    if kind == "per-class":
        render = lambda: plots.per_class_bars(  # noqa: E731
            {f"v{version}": test["per_class_accuracy"]},
            f"Version {version}: per-class test accuracy", row.forgotten_classes)
    else:
        render = lambda: plots.confusion_heatmap(  # noqa: E731
            test["confusion_matrix"], f"Version {version}: test confusion matrix")
    return png_response(console_state(request).plot_cache.get(key, render))


@data.get("/plots/forget-requests/{request_id}/{kind}.png")
def request_plot(request: Request,
                 access: Annotated[auth.Session, Depends(auth.page("request"))],
                 request_id: str, kind: str) -> Response:
    ctx = service_context(request)
    with ctx.db.session() as session:
        row = get_request(session, request_id[:64])
    metrics = row.metrics or {}
    # Unverified requests have results too: the console shows them for inspection.
    if row.status not in (RequestStatus.completed.value, RequestStatus.unverified.value) \
            or not metrics.get("after"):
        raise NotFoundError(f"forget request {row.id} has no results to plot yet")
    before, after = metrics["before"], metrics["after"]
    source, result = f"v{row.source_version}", f"v{row.result_version}"
    if kind == "per-class":
        render = lambda: plots.per_class_bars(  # noqa: E731
            {f"before ({source})": views.test_per_class(before),
             f"after ({result})": views.test_per_class(after)},
            "Per-class test accuracy before and after", row.target_classes)
    elif kind in ("confusion-before", "confusion-after"):
        which, label = (before, source) if kind == "confusion-before" else (after, result)
        matrix = views.test_confusion(which)
        if matrix is None:
            raise NotFoundError(f"forget request {row.id} has no test confusion matrix")
        render = lambda: plots.confusion_heatmap(  # noqa: E731
            matrix, f"{kind.split('-')[1].capitalize()} ({label}): test confusion")
    else:
        raise NotFoundError(f"no {kind} plot for a forget request")
    key = f"request-{row.id}-{kind}"
    return png_response(console_state(request).plot_cache.get(key, render))


@data.get("/plots/sweep/{version}/{digit}.png")
def sweep_plot(request: Request,
               access: Annotated[auth.Session, Depends(auth.page("sweep"))],
               version: VersionNumber, digit: int,
               alphas: Annotated[str | None, Query(max_length=300)] = None) -> Response:
    ctx = service_context(request)
    with ctx.db.session() as session:
        row = registry_service.get_version(session, model_name_of(request), version)
    parsed = parse_alphas(alphas)
    data_key = hashlib.sha256(ctx.model_data(row.model_name).checksum.encode()).hexdigest()[:12]
    alpha_key = hashlib.sha256(repr(parsed).encode()).hexdigest()[:12]
    key = f"sweep-{row.artifact_sha256[:24]}-{data_key}-{digit}-{alpha_key}"
    render = lambda: plots.sweep_plot(alpha_sweep(ctx, row, digit, parsed), digit)  # noqa: E731
    return png_response(console_state(request).plot_cache.get(key, render))
