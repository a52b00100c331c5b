from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from sqlalchemy.orm import Session

from app.api.deps import get_ctx, get_session
from app.auth.deps import require
from app.auth.service import Role
from app.certificates import service
from app.certificates.schemas import ErasureCertificate, PublicKey
from app.core.context import ServiceContext

router = APIRouter(tags=["certificates"])


@router.get("/forget-requests/{request_id}/certificate", response_model=ErasureCertificate,
            dependencies=[Depends(require(Role.privacy_officer, Role.auditor))])
def read_certificate(request_id: Annotated[str, Path(max_length=64)],
                     ctx: Annotated[ServiceContext, Depends(get_ctx)],
                     session: Annotated[Session, Depends(get_session)]) -> ErasureCertificate:
    """A signed erasure certificate for a completed request (409 while it is not)."""
    return ErasureCertificate.model_validate(service.issue_certificate(ctx, session, request_id))


@router.get("/certificates/public-key", response_model=PublicKey)
def read_public_key(ctx: Annotated[ServiceContext, Depends(get_ctx)]) -> PublicKey:
    """Public: the key that verifies certificates (`unlearn certificate verify --public-key`)."""
    return PublicKey(**service.public_key_info(service.get_signer(ctx)))
