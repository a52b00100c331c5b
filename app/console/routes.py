"""The console's HTTP layer, assembled in one place: each page's module (app/console/pages)
brings its HTML routes and data calls; this mounts them and the static files. Thin, like
the API's routes: every read and write goes through the same service functions, with
the console user as the actor."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from app.console.pages import audit, login, models, plots, requests, sweep, try_it
from app.console.settings import ConsoleSettings
from app.console.web import HERE

PAGE_MODULES = (login, models, requests, audit, try_it, sweep, plots)


def mount_console(app: FastAPI, settings: ConsoleSettings | None = None) -> None:
    """Serve the console under /console (its routes stay out of the OpenAPI schema)."""
    app.state.console_settings = settings or ConsoleSettings()
    for module in PAGE_MODULES:
        app.include_router(module.pages)
        app.include_router(module.data)
    app.mount("/console/static", StaticFiles(directory=str(HERE / "static")),
              name="console-static")
