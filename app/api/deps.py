"""The routes' dependencies, and their aliases (as full-stack-fastapi-template's
``app/api/deps.py``): a route takes ``ctx: CtxDep, session: SessionDep`` rather than
spelling out ``Annotated[..., Depends(...)]`` each time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.auth.deps import get_principal
from app.auth.service import Principal
from app.context import ServiceContext


def get_ctx(request: Request) -> ServiceContext:
    return request.app.state.ctx


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.ctx.db.session() as session:
        yield session


CtxDep = Annotated[ServiceContext, Depends(get_ctx)]
SessionDep = Annotated[Session, Depends(get_session)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]


def get_actor(principal: PrincipalDep) -> str:
    """Who is calling, as recorded in the audit log: the name of the API key that
    authenticated the request (the caller's own ``requested_by`` is recorded beside it)."""
    return principal.name


ActorDep = Annotated[str, Depends(get_actor)]
