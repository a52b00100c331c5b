"""Console access: log in with an API key, keep a server-side session, check CSRF tokens
on every state-changing request, and answer one question for the pages: which roles does
this caller hold?

The cookie holds only an opaque random token; the database keeps its sha256 with the key
it belongs to and its expiry (app/console/sessions.py). Each request looks the session up
and re-checks its key, so logout, expiry and revoking the key all end it at once. The
cookie is HttpOnly (page scripts cannot read it), SameSite=Strict (browsers do not send it
with requests started by other sites) and Secure unless UNLEARN_CONSOLE_SECURE_COOKIE=false
(plain-HTTP local use). A per-session CSRF token, derived from the session token, travels
in every form; a POST whose form (or ``X-CSRF-Token`` header) does not carry it is refused.
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request

from app.auth.deps import route_roles
from app.auth.service import Principal, authenticate
from app.console import sessions
from app.core.errors import ForbiddenError
from app.console.state import console_state

SESSION_COOKIE = "unlearn_console"
LOGIN_COOKIE = "unlearn_console_login"
COOKIE_PATH = "/console"

# Each page names the API operation it mirrors: the route whose data it shows or whose
# action it takes. Its roles are that route's, read from the route's own require(...)
# dependency (app.auth.deps.route_roles), so the console admits exactly whom the API
# admits and cannot drift from it (tests/test_console.py walks every console route).
# Admin passes every check through app.auth's own rule (Principal.has_any), as on the API.
PAGE_MIRRORS: dict[str, tuple[str, str]] = {
    "models": ("GET", "/models"),
    "version": ("GET", "/models/{version}"),
    # A version's test metrics in full (per class, confusion): its plots and tables.
    "version_metrics": ("GET", "/models/{version}/metrics"),
    "requests": ("GET", "/forget-requests"),
    "request": ("GET", "/forget-requests/{request_id}"),
    "file_request": ("POST", "/forget-requests"),
    "audit": ("GET", "/audit-log"),
    "audit_export": ("GET", "/audit-log/export"),
    "certificate": ("GET", "/forget-requests/{request_id}/certificate"),
    "try": ("POST", "/predict"),
    # The α sweep recomputes a version's test metrics for trial α's: what the version's
    # metrics route reports, so the same readers.
    "sweep": ("GET", "/models/{version}/metrics"),
}


def page_roles(app: Any, page: str) -> frozenset[str]:
    """The roles (admin included) that may see ``page``: those of its API route."""
    method, path = PAGE_MIRRORS[page]
    roles = route_roles(app, method, path)
    if roles is None:  # every console page needs a login; a public mirror is a mistake
        raise KeyError(f"console page {page!r} mirrors the public route {method} {path}")
    return roles


def may(request: Request, principal: Principal, page: str) -> bool:
    """Whether ``principal`` (app.auth's) may see ``page``."""
    return principal.has_any(page_roles(request.app, page))


class LoginRequired(Exception):
    """No valid session: the page redirects to the login form."""


class Forbidden(ForbiddenError):
    """The caller's key lacks the page's role, or a CSRF/origin check failed: 403."""


@dataclass(frozen=True)
class Session:
    principal: Principal
    csrf_token: str


def authenticate_key(request: Request, key: str, login: bool = False) -> Principal | None:
    """The one function that turns an API key into a principal with roles (None: refused):
    the API's own keys (app/auth), so the console admits exactly whom the API admits.
    A login attempt goes through the failed-authentication throttle (raising
    TooManyFailuresError when over a limit), exactly as an API call does."""
    if not key or len(key) > 500:
        return None
    if login:
        from app.auth.deps import authenticate_throttled
        from app.core.errors import UnauthenticatedError

        principal: Principal | None
        try:
            principal = authenticate_throttled(request, key, "console")
        except UnauthenticatedError:
            return None
    else:
        with request.app.state.ctx.db.session() as session:
            principal = authenticate(session, key)
    return principal


def current_session(request: Request) -> Session | None:
    """The caller's live server-side session, looked up on every request; None if there
    is no cookie, or its session is unknown, expired, logged out or its key revoked."""
    # Session or None once looked up for this request; False (not a session) before.
    cached: Session | None | bool = getattr(request.state, "console_session", False)
    if not isinstance(cached, bool):
        return cached
    session = None
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        with request.app.state.ctx.db.session() as db_session:
            live = sessions.find_session(db_session, token)
        if live is not None:
            session = Session(Principal(key_id=live.key_id, name=live.name,
                                        roles=live.roles), csrf_token=live.csrf_token)
    request.state.console_session = session
    return session


def caller_roles(request: Request) -> frozenset[str]:
    """The roles of whoever makes this request (empty when not logged in)."""
    session = current_session(request)
    return session.principal.roles if session else frozenset()


def require(request: Request, page: str) -> Session:
    session = current_session(request)
    if session is None:
        raise LoginRequired()
    if not may(request, session.principal, page):
        allowed = ", ".join(sorted(page_roles(request.app, page)))
        held = ", ".join(sorted(session.principal.roles)) or "none"
        raise Forbidden(f"this page needs one of the roles {allowed}; your key holds {held}")
    return session


def page(name: str) -> Callable[[Request], Session]:
    """A route dependency: the caller's session if its key may see page ``name`` (login
    redirect or 403 otherwise). Declared on the route, as the API's ``require(...)`` is,
    so that each console route says which API operation it mirrors (``console_page``)."""
    PAGE_MIRRORS[name]  # an unknown page fails when the route is declared, not when called

    def check(request: Request) -> Session:
        return require(request, name)

    check.console_page = name  # type: ignore[attr-defined]  # read by the tests
    return check


def session_lifetime(request: Request) -> dt.timedelta:
    return dt.timedelta(hours=console_state(request).settings.console_session_hours)


def start_session(request: Request, principal: Principal) -> str:
    """A new server-side session for a logged-in key; returns the cookie's token."""
    with request.app.state.ctx.db.session() as db_session:
        return sessions.start_session(db_session, principal.key_id, session_lifetime(request))


def end_session(request: Request) -> None:
    """Logout: revoke the cookie's session, so that the cookie, replayed, opens nothing."""
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        with request.app.state.ctx.db.session() as db_session:
            sessions.end_session(db_session, token)
    request.state.console_session = None


def new_login_token() -> str:
    return secrets.token_urlsafe(32)


def tokens_match(submitted: str, expected: str) -> bool:
    return bool(submitted) and hmac.compare_digest(submitted.encode(), expected.encode())


def check_csrf(request: Request, session: Session, submitted: str | None) -> None:
    """Refuse a state-changing request without the session's token or from another origin."""
    check_same_origin(request)
    if not tokens_match(submitted or "", session.csrf_token):
        raise Forbidden("the form's CSRF token is missing or stale; reload the page and retry")


def check_same_origin(request: Request) -> None:
    origin = request.headers.get("origin")
    if origin and origin != "null":
        if urlsplit(origin).netloc != request.headers.get("host", ""):
            raise Forbidden("cross-origin request refused")


def safe_next(target: str | None) -> str:
    """Only console paths are followed after login (no open redirect)."""
    if target and target.startswith("/console") and not target.startswith("//") \
            and "\\" not in target and "://" not in target:
        return target
    return "/console/"
