"""Authentication and authorization as FastAPI dependencies.

``require(...)`` authenticates first (401 without a valid key), then checks roles (403),
before the route runs: so neither answer depends on whether the addressed resource exists.
``require_in_route(...)`` leaves the same check to the route, which runs it first thing in
the thread hop its own blocking work takes anyway, in the same database session (the
prediction routes: a hop and a session of its own cost them 0.5-1 ms a call on the 2-core
CPU, measured in docs/serving.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.auth.service import Principal, Role, authenticate
from app.auth.throttle import audit_failure_window, client_address
from app.core.errors import ForbiddenError, UnauthenticatedError

bearer_scheme = HTTPBearer(auto_error=False, description="An API key: `Bearer <key>`.")


def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    return authenticate_throttled(request, presented_key(request, credentials), "api")


def presented_key(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str:
    """The bearer token the request carries (401 when it carries none); not yet checked."""
    if credentials is None or not credentials.credentials:
        sent = request.headers.get("authorization", "").strip()
        if sent and " " not in sent:  # `Authorization: <key>`: the scheme is missing
            raise UnauthenticatedError("the Authorization header lacks its scheme: send "
                                       "'Authorization: Bearer <key>', not the bare key")
        raise UnauthenticatedError("an API key is required: send 'Authorization: Bearer <key>'")
    return credentials.credentials


def authenticate_throttled(request: Request, token: str, interface: str,
                           session: Session | None = None) -> Principal:
    """Check a presented key under the failed-authentication throttle (app.auth.throttle):
    429 for an address over its limit before the key is looked at; a valid key otherwise
    always passes; a wrong one is counted, audited once per address per window, and
    answered 401 (429 once over a limit). The key is read in ``session`` when given (a
    route's own read-only session), else in a session of its own."""
    throttle = request.app.state.throttle
    address = client_address(request)
    throttle.check_address(address)
    ctx = request.app.state.ctx
    with ctx.db.session_or(session) as reading:
        principal = authenticate(reading, token)
    if principal is not None:
        return principal
    throttled, previous = throttle.record_failure(address, token)
    if previous is not None:
        audit_failure_window(ctx.db, address, token, interface, previous,
                             int(throttle.window_s))
    raise throttle.refuse(address, token, throttled,
                          "the API key is not valid (unknown, revoked or expired)",
                          UnauthenticatedError)


def require(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting keys with any of ``roles`` (admin is always admitted)."""
    wanted = frozenset(role.value for role in roles)

    # Async although it awaits nothing: FastAPI runs a sync dependency in the thread pool,
    # and this pure role check would cost every call a thread hop for nothing.
    async def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        return _admitted(principal, wanted)

    # Read by the tests and the README's matrix; mypy has no type for a function attribute.
    check.required_roles = wanted  # type: ignore[attr-defined]
    return check


def _admitted(principal: Principal, wanted: frozenset[str]) -> Principal:
    if not principal.has_any(wanted):
        needed = " or ".join(sorted(wanted | {Role.admin.value}))
        raise ForbiddenError(f"this operation needs the role {needed}")
    return principal


@dataclass
class KeyCheck:
    """A presented key and the roles a route admits, checked when the route calls
    ``principal()`` (blocking: one database read), before anything else it does."""

    request: Request
    token: str
    roles: frozenset[str]
    _caller: Principal | None = field(default=None, init=False, repr=False)

    @property
    def checked(self) -> bool:
        """Whether the key has passed already (``principal()`` was called and answered)."""
        return self._caller is not None

    def principal(self, session: Session | None = None) -> Principal:
        """The caller: 401 for an unknown, revoked or expired key (under the throttle),
        403 for a key without the roles; as ``require`` answers. ``session``: the route's
        own read-only session, to read the key in (one session a call, not two). Checked
        once a request: a route that had to check it early (before reading a large body)
        calls it again where it always does, and gets the caller checked then."""
        if self._caller is None:
            self._caller = _admitted(
                authenticate_throttled(self.request, self.token, "api", session), self.roles)
        return self._caller


def require_in_route(*roles: Role) -> Callable[..., Awaitable[KeyCheck]]:
    """``require`` for a route that checks the key itself, first thing in its own thread
    hop: the dependency answers 401 at once when no key is sent, and otherwise hands the
    route a ``KeyCheck`` to run. The route must call ``KeyCheck.principal()`` before it
    touches anything the answer could depend on."""
    wanted = frozenset(role.value for role in roles)

    async def check(request: Request, credentials: Annotated[
            HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]) -> KeyCheck:
        return KeyCheck(request, presented_key(request, credentials), wanted)

    check.required_roles = wanted  # type: ignore[attr-defined]  # as require's
    return check


# Shorthands for the routes.
ANY_ROLE = tuple(Role)


def _flatten_routes(routes, prefix: str = "", dependencies: tuple = ()):
    """(full path, route, include-level dependencies) for every route, looking inside
    included routers (FastAPI >= 0.16x keeps them as nested ``_IncludedRouter`` objects)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            context = route.include_context
            yield from _flatten_routes(included.routes, prefix + (context.prefix or ""),
                                       dependencies + tuple(context.dependencies or ()))
        elif getattr(route, "methods", None):
            yield prefix + route.path, route, dependencies


def _required_roles(dependencies) -> frozenset[str] | None:
    stack = list(dependencies)
    while stack:
        dependency = stack.pop()
        call = getattr(dependency, "call", None) or getattr(dependency, "dependency", None)
        roles = getattr(call, "required_roles", None)
        if roles is not None:
            return roles | {Role.admin.value}
        stack.extend(getattr(dependency, "dependencies", ()) or ())
    return None


def role_matrix(app) -> list[tuple[str, str, frozenset[str] | None]]:
    """(method, path, roles admitted, or None for a public route) for every route."""
    rows = []
    for path, route, include_dependencies in _flatten_routes(app.routes):
        if path.startswith("/console"):
            # The review console logs in with a key into a session cookie; each page takes
            # the roles of the API route it mirrors (app/console/auth.py, PAGE_MIRRORS).
            continue
        dependant = getattr(route, "dependant", None)
        roles = _required_roles([*include_dependencies,
                                 *(dependant.dependencies if dependant is not None else ())])
        for method in sorted(route.methods):
            if method != "HEAD":
                rows.append((method, path, roles))
    return sorted(rows, key=lambda row: (row[1], row[0]))


def route_roles(app, method: str, path: str) -> frozenset[str] | None:
    """The roles (admin included) that the API route ``method path`` admits, read from its
    ``require(...)`` dependency as the matrix reads them; None for a public route. Built
    once per app (the routes do not change after start). A name that matches no route is
    a programming error (a console page mirroring a route that was renamed): KeyError."""
    table = getattr(app.state, "route_roles", None)
    if table is None:
        table = {(m, p): roles for m, p, roles in role_matrix(app)}
        app.state.route_roles = table
    try:
        return table[(method, path)]
    except KeyError:
        raise KeyError(f"no API route {method} {path}") from None


def role_matrix_markdown(app, only: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> str:
    """The matrix as a Markdown table; ``only``/``exclude`` pick routes by path prefix
    (the Open Inference Protocol's ``/v2/`` routes are documented in docs/serving.md)."""
    roles = [role.value for role in Role]
    lines = ["| Route | " + " | ".join(roles) + " |",
             "|---|" + "---|" * len(roles)]
    for method, path, allowed in role_matrix(app):
        # /metrics is left out: who may read it is a setting (public, or auditor with
        # UNLEARN_METRICS_REQUIRE_KEY), so one static row would be wrong in one of the two
        # configurations; docs/operations.md describes both.
        if path.startswith(("/docs", "/redoc", "/openapi")) or path == "/metrics":
            continue
        if (only and not path.startswith(only)) or (exclude and path.startswith(exclude)):
            continue
        cells = ["public" if allowed is None else ("yes" if role in allowed else "—")
                 for role in roles]
        lines.append(f"| `{method} {path}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)
