"""Reading one forget request."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.core.errors import NotFoundError
from app.forget_requests.models import ForgetRequest


def get_request(session: Session, request_id: str) -> ForgetRequest:
    request = session.get(ForgetRequest, request_id)
    if request is None:
        raise NotFoundError(f"forget request {request_id!r} does not exist", "request_id")
    return request
