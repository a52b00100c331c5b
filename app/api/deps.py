from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.auth.deps import get_principal
from app.auth.service import Principal
from app.core.context import ServiceContext


def get_ctx(request: Request) -> ServiceContext:
    return request.app.state.ctx


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.ctx.db.session() as session:
        yield session


def get_actor(principal: Annotated[Principal, Depends(get_principal)]) -> str:
    """Who is calling, as recorded in the audit log: the name of the API key that
    authenticated the request (the caller's own ``requested_by`` is recorded beside it)."""
    return principal.name
