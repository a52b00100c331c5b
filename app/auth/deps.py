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
