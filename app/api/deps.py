from __future__ import annotations

from collections.abc import Iterator

from fastapi import Request
from sqlalchemy.orm import Session

from app.core.context import ServiceContext


def get_ctx(request: Request) -> ServiceContext:
    return request.app.state.ctx


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.ctx.db.session() as session:
        yield session


def get_actor(request: Request) -> str:
    """Who is calling, as recorded in the audit log. Without authentication this is the
    client address; the caller's own ``requested_by`` statement is recorded beside it."""
    host = request.client.host if request.client else "unknown"
    return f"anonymous@{host}"
