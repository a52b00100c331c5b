"""Console access: log in with an API key, keep it in a signed session cookie, check CSRF
tokens on every state-changing request, and answer one question for the pages: which
roles does this caller hold?

The cookie is HttpOnly (page scripts cannot read it) and SameSite=Strict (browsers do not
send it with requests started by other sites). It holds the key itself, signed, so that
each request re-checks the key: a revoked key stops working in the console at once. A
per-session random CSRF token travels in the cookie and in every form; a POST whose form
(or ``X-CSRF-Token`` header) does not carry it is refused.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import Request

from app.auth.service import Role, authenticate
from app.console.sessions import SessionSigner
from app.console.state import console_state

SESSION_COOKIE = "unlearn_console"
LOGIN_COOKIE = "unlearn_console_login"
COOKIE_PATH = "/console"

# The roles of the API keys (app/auth).
ROLES = tuple(role.value for role in Role)

# Which roles may see each part of the console. One table, so that the pages, the
# navigation and the tests agree. Admin sees everything.
PAGE_ROLES: dict[str, frozenset[str]] = {
    "models": frozenset({"admin", "privacy_officer", "auditor", "client"}),
    "version": frozenset({"admin", "privacy_officer", "auditor"}),
    "requests": frozenset({"admin", "privacy_officer", "auditor"}),
    "file_request": frozenset({"admin", "privacy_officer"}),
    "audit": frozenset({"admin", "auditor"}),
    "certificate": frozenset({"admin", "privacy_officer", "auditor"}),
    "try": frozenset({"admin", "client"}),
    "sweep": frozenset({"admin", "privacy_officer", "auditor"}),
}


class LoginRequired(Exception):
    """No valid session: the page redirects to the login form."""


class Forbidden(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Principal:
    name: str
    roles: frozenset[str]

    def may(self, page: str) -> bool:
        return bool(self.roles & PAGE_ROLES[page])


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

        try:
            principal = authenticate_throttled(request, key, "console")
        except UnauthenticatedError:
            return None
    else:
        with request.app.state.ctx.db.session() as session:
            principal = authenticate(session, key)
    if principal is None:
        return None
    return Principal(name=principal.name, roles=frozenset(principal.roles))


def current_session(request: Request) -> Session | None:
    """The caller's session, re-checking the key on every request; None if absent or bad."""
    cached = getattr(request.state, "console_session", False)
    if cached is not False:
        return cached
    session = None
    raw = request.cookies.get(SESSION_COOKIE)
    data = console_state(request).signer.loads(raw) if raw else None
    if data and isinstance(data.get("k"), str) and isinstance(data.get("c"), str):
        principal = authenticate_key(request, data["k"])
        if principal is not None:
            session = Session(principal=principal, csrf_token=data["c"])
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
    if not session.principal.may(page):
        allowed = ", ".join(sorted(PAGE_ROLES[page]))
        held = ", ".join(sorted(session.principal.roles)) or "none"
        raise Forbidden(f"this page needs one of the roles {allowed}; your key holds {held}")
    return session


def new_session_cookie(request: Request, key: str) -> str:
    signer: SessionSigner = console_state(request).signer
    return signer.dumps({"k": key, "c": secrets.token_urlsafe(32), "t": int(time.time())})


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
