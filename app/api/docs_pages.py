"""``/docs`` (Swagger UI) and ``/redoc`` served from this origin: their scripts and styles
come from the ``fastapi-offline`` package's copies under ``/docs-assets``, never from a
CDN, and each page carries a Content-Security-Policy that admits only this origin (plus
the hash of Swagger UI's one inline start-up script)."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs-assets"
ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def _policy(script_sources: str) -> str:
    return ("default-src 'none'; "
            f"script-src 'self' {script_sources}; "
            "style-src 'self' 'unsafe-inline'; "  # both UIs set style attributes
            "img-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
            "font-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


def _with_policy(page: HTMLResponse, extra_sources: str = "") -> HTMLResponse:
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(bytes(page.body)))
    page.headers["Content-Security-Policy"] = _policy(f"{hashes} {extra_sources}".strip())
    return page


def install_docs_pages(app: FastAPI) -> None:
    """Call on an app made with ``docs_url=None, redoc_url=None``."""
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")
    title = app.title

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return _with_policy(get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{title} - Swagger UI",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png", oauth2_redirect_url=None))

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        # ReDoc starts a web worker from a blob: URL.
        return _with_policy(get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{title} - ReDoc",
            redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_URL}/favicon.png", with_google_fonts=False),
            "blob:")
