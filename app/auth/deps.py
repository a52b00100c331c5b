"""Authentication and authorization as FastAPI dependencies.

``require(...)`` authenticates first (401 without a valid key), then checks roles (403),
before the route runs: so neither answer depends on whether the addressed resource exists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.auth.service import Principal, Role, authenticate
from app.core.errors import ForbiddenError, UnauthenticatedError

bearer_scheme = HTTPBearer(auto_error=False, description="An API key: `Bearer <key>`.")


def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    if credentials is None or not credentials.credentials:
        sent = request.headers.get("authorization", "").strip()
        if sent and " " not in sent:  # `Authorization: <key>`: the scheme is missing
            raise UnauthenticatedError("the Authorization header lacks its scheme: send "
                                       "'Authorization: Bearer <key>', not the bare key")
        raise UnauthenticatedError("an API key is required: send 'Authorization: Bearer <key>'")
    with request.app.state.ctx.db.session() as session:
        principal = authenticate(session, credentials.credentials)
    if principal is None:
        raise UnauthenticatedError("the API key is not valid (unknown, revoked or expired)")
    return principal


def require(*roles: Role) -> Callable[..., Principal]:
    """A dependency admitting keys with any of ``roles`` (admin is always admitted)."""
    wanted = frozenset(role.value for role in roles)

    def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if not principal.has_any(wanted):
            needed = " or ".join(sorted(wanted | {Role.admin.value}))
            raise ForbiddenError(f"this operation needs the role {needed}")
        return principal

    check.required_roles = wanted  # read by the tests and the README's matrix
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
            # The review console logs in with a key into a session cookie and checks roles
            # per page itself (app/console/auth.py, PAGE_ROLES); it is not the bearer API.
            continue
        dependant = getattr(route, "dependant", None)
        roles = _required_roles([*include_dependencies,
                                 *(dependant.dependencies if dependant is not None else ())])
        for method in sorted(route.methods):
            if method != "HEAD":
                rows.append((method, path, roles))
    return sorted(rows, key=lambda row: (row[1], row[0]))


def role_matrix_markdown(app) -> str:
    roles = [role.value for role in Role]
    lines = ["| Route | " + " | ".join(roles) + " |",
             "|---|" + "---|" * len(roles)]
    for method, path, allowed in role_matrix(app):
        if path.startswith(("/docs", "/redoc", "/openapi")):
            continue
        cells = ["public" if allowed is None else ("yes" if role in allowed else "—")
                 for role in roles]
        lines.append(f"| `{method} {path}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)
